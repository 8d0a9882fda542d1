"""Findings: what validation reports, and how it is printed for people and machines; the
problems the checks across roots return, and the state of a root they read."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from mlopsctl.base.resources import Resource


@dataclass(frozen=True, order=True)
class Finding:
    """One problem, located by source file, rendered resource and field path."""

    file: str
    resource: str
    field: str
    message: str
    check: str
    root: str = ""


@dataclass(frozen=True)
class Problem:
    resource: Resource | None
    field: str
    message: str
    check: str
    # For problems about the tree rather than a rendered object (a missing environment).
    file: str = ""


@dataclass(frozen=True)
class RootState:
    """What validation knows about one kustomize root after rendering it."""

    error: str | None
    resources: tuple[Resource, ...]


def format_text(findings: Iterable[Finding]) -> str:
    lines = []
    for finding in findings:
        where = f"{finding.file}: {finding.resource}" if finding.resource else finding.file
        field = f": {finding.field}" if finding.field else ""
        via = f", rendered from {finding.root}" if finding.root else ""
        lines.append(f"{where}{field}: {finding.message} [{finding.check}{via}]")
    return "\n".join(lines)


def format_json(findings: Iterable[Finding], **extra: object) -> str:
    return json.dumps(
        {"findings": [asdict(finding) for finding in findings], **extra},
        indent=2,
        sort_keys=True,
    )

"""Findings: what validation reports, and how it is printed for people and machines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True, order=True)
class Finding:
    """One problem, located by source file, rendered resource and field path."""

    file: str
    resource: str
    field: str
    message: str
    check: str
    root: str = ""


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

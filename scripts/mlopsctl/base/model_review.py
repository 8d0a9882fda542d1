"""What a model pin change means, for a reviewer: the two versions, their run metrics side by
side with deltas, and whether the signature changed.

The same text goes into `mlopsctl diff` and into the pull requests the promoter opens. The
wording is pure (facts in, text out); `facts` reads them through the small `Registry` interface.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.inventory import LocatedPin
from mlopsctl.base.registry import Registry


@dataclass(frozen=True)
class VersionFacts:
    """What the registry knows about one model version; `problem` says why something is not."""

    version: str
    exists: bool = True
    run_id: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    signature: Mapping[str, Any] | None = None
    signature_known: bool = True
    problem: str = ""


@dataclass(frozen=True)
class PinMove:
    """A model pin moved between two revisions (or by a promotion), in one or more files."""

    environment: str
    model: str
    alias: str
    old: str  # "" when the pin is new
    new: str  # "" when the pin is gone
    files: tuple[str, ...]
    before: VersionFacts | None = None
    after: VersionFacts | None = None
    note: str = ""  # why there are no facts (no registry given, registry unreachable)


def pin_moves(before: Sequence[LocatedPin], after: Sequence[LocatedPin]) -> list[PinMove]:
    """Model pins whose version differs between two scans; pins of one model, alias, environment
    and move in several files (model server and frontend) make one move."""
    old = {(pin.file, pin.pin.follows): pin for pin in before if pin.pin.kind == "model"}
    new = {(pin.file, pin.pin.follows): pin for pin in after if pin.pin.kind == "model"}
    grouped: dict[tuple[str, str, str, str, str], list[str]] = {}
    for key in sorted(set(old) | set(new)):
        was, now = old.get(key), new.get(key)
        located = now or was
        assert located is not None
        old_version = was.pin.value if was else ""
        new_version = now.pin.value if now else ""
        if old_version == new_version:
            continue
        group = (
            located.environment or "",
            located.model,
            located.alias,
            old_version,
            new_version,
        )
        grouped.setdefault(group, []).append(located.file)
    return [
        PinMove(environment, model, alias, old_version, new_version, tuple(files))
        for (environment, model, alias, old_version, new_version), files in grouped.items()
    ]


def facts(registry: Registry, model: str, version: str) -> VersionFacts:
    """One version's facts; a registry problem is recorded, not raised (a review goes on)."""
    if not version or version == "0":
        return VersionFacts(version, exists=False, problem="no version pinned")
    try:
        found = registry.version(model, version)
        if found is None:
            return VersionFacts(version, exists=False, problem="not in the registry")
        metrics = registry.run_metrics(found.run_id)
    except MlopsctlError as error:
        return VersionFacts(version, exists=False, problem=str(error), signature_known=False)
    try:
        signature = registry.signature(model, version)
        known = True
    except MlopsctlError:
        signature, known = None, False
    return VersionFacts(version, True, found.run_id, metrics, signature, known)


def with_facts(moves: Sequence[PinMove], registry: Registry | None, why_not: str) -> list[PinMove]:
    if registry is None:
        return [replace(move, note=why_not) for move in moves]
    return [
        replace(
            move,
            before=facts(registry, move.model, move.old),
            after=facts(registry, move.model, move.new),
        )
        for move in moves
    ]


# --- wording -----------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _delta(old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return "-"
    difference = new - old
    return "±0" if difference == 0 else f"{difference:+.4g}"


def metric_rows(before: VersionFacts, after: VersionFacts) -> list[tuple[str, str, str, str]]:
    names = sorted(set(before.metrics) | set(after.metrics))
    return [
        (
            name,
            _number(before.metrics.get(name)),
            _number(after.metrics.get(name)),
            _delta(before.metrics.get(name), after.metrics.get(name)),
        )
        for name in names
    ]


def _columns(part: Any) -> dict[str, str] | None:
    """A signature's inputs or outputs as name -> type, when they are named columns."""
    try:
        specs = json.loads(part) if isinstance(part, str) else part
    except json.JSONDecodeError:
        return None
    if not isinstance(specs, list):
        return None
    columns = {}
    for index, spec in enumerate(specs):
        if not isinstance(spec, dict):
            return None
        columns[str(spec.get("name", f"#{index}"))] = str(spec.get("type", spec.get("tensor-spec")))
    return columns


def signature_verdict(before: VersionFacts, after: VersionFacts) -> str:
    if not (before.signature_known and after.signature_known):
        return "unknown (the registry did not serve the MLmodel files)"
    if before.signature is None and after.signature is None:
        return "neither version has one"
    if before.signature is None:
        return f"**added** (v{before.version} had none)"
    if after.signature is None:
        return f"**removed** (v{after.version} has none)"
    changes = []
    for part in ("inputs", "outputs", "params"):
        old, new = before.signature.get(part), after.signature.get(part)
        if old == new:
            continue
        old_columns, new_columns = _columns(old), _columns(new)
        if old_columns is None or new_columns is None:
            changes.append(f"{part} changed")
            continue
        details = [f"+`{name}`" for name in new_columns if name not in old_columns]
        details += [f"-`{name}`" for name in old_columns if name not in new_columns]
        details += [
            f"`{name}` {old_columns[name]} → {new_columns[name]}"
            for name in new_columns
            if name in old_columns and old_columns[name] != new_columns[name]
        ]
        changes.append(f"{part}: " + (", ".join(details) or "reordered or re-specified"))
    return "unchanged" if not changes else "**changed**: " + "; ".join(changes)


def _title(move: PinMove) -> str:
    old = f"v{move.old}" if move.old else "(none)"
    new = f"v{move.new}" if move.new else "(removed)"
    return f"`{move.model}` in {move.environment or 'no environment'}: {old} → {new}"


def markdown(moves: Sequence[PinMove]) -> str:
    """The moves as Markdown sections (a PR body or comment); empty when there are none."""
    sections = []
    for move in moves:
        lines = [
            f"#### Model {_title(move)} (follows `@{move.alias}`)",
            "",
            "Pinned in " + ", ".join(f"`{file}`" for file in move.files) + ".",
            "",
        ]
        if move.before is None or move.after is None:
            lines.append(f"_Metrics not shown: {move.note}_")
        else:
            lines.extend(_markdown_facts(move.before, move.after))
        sections.append("\n".join(lines).rstrip() + "\n")
    return "\n".join(sections)


def _markdown_facts(before: VersionFacts, after: VersionFacts) -> list[str]:
    lines = []
    for side in (before, after):
        if side.problem:
            lines.append(f"- v{side.version}: {side.problem}")
        elif side.run_id:
            lines.append(f"- v{side.version}: run `{side.run_id}`")
    rows = metric_rows(before, after)
    if rows:
        lines += [
            "",
            f"| metric | v{before.version} | v{after.version} | Δ |",
            "|---|---:|---:|---:|",
            *(f"| {name} | {old} | {new} | {delta} |" for name, old, new, delta in rows),
        ]
    else:
        lines += ["", "No run metrics to compare."]
    lines += ["", f"Signature: {signature_verdict(before, after)}."]
    return lines


def text(moves: Sequence[PinMove]) -> str:
    """The same content for a terminal (and commit bodies): plain columns, no Markdown."""
    blocks = []
    for move in moves:
        lines = [
            f"model {_title(move).replace('`', '')} (follows @{move.alias})",
            "  pinned in " + ", ".join(move.files),
        ]
        if move.before is None or move.after is None:
            lines.append(f"  metrics not shown: {move.note}")
        else:
            for side in (move.before, move.after):
                if side.problem:
                    lines.append(f"  v{side.version}: {side.problem}")
            rows = [("metric", f"v{move.before.version}", f"v{move.after.version}", "delta")]
            rows += metric_rows(move.before, move.after)
            if len(rows) > 1:
                widths = [max(len(row[column]) for row in rows) for column in range(4)]
                lines += [
                    "  "
                    + "  ".join(
                        cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                    ).rstrip()
                    for row in rows
                ]
            verdict = signature_verdict(move.before, move.after).replace("**", "")
            lines.append(f"  signature: {verdict.replace('`', '')}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")

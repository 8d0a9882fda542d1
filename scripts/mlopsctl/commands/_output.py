"""What subcommands print and write: tables, a promotion's report, files replaced atomically."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from mlopsctl.promote.landing import OutcomeKind, Report


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = [header, *rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def print_report(report: Report, dry_run: bool, base: str) -> int:
    for note in report.notes:
        print(note)
    for refusal in report.refusals:
        print(refusal)
    for failure in report.failures:
        print(failure, file=sys.stderr)
    for outcome in report.outcomes:
        if outcome.kind is OutcomeKind.FAILED:
            continue  # said with the failures
        for change in outcome.changes:
            print(f"{outcome.environment}: {change.summary()}")
        print(f"{outcome.environment}: {outcome.result}")
        if dry_run and outcome.diff:
            print(outcome.diff, end="")
        if outcome.pull_request:
            print(f"{outcome.environment}: pull request {outcome.pull_request}")
        elif outcome.branch and not dry_run:
            print(f"{outcome.environment}: open a pull request from {outcome.branch} into {base}")
    if not report.outcomes and not report.refusals and not report.failures:
        print("nothing to do: every pin already has the value asked for")
    return report.exit_code


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    Path(temporary).replace(path)

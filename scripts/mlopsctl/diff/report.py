"""`mlopsctl diff` results as text (terminals), Markdown (pull-request comments) and JSON.

Pure: a DiffReport in, strings out. The Markdown stays under GitHub's comment limit: the
summary is always whole; details are cut, with a note naming the file that holds all of it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from mlopsctl.base import model_review
from mlopsctl.diff.manifests import ResourceDiff, RootDiff

# GitHub refuses issue and pull-request comments longer than this many characters.
GITHUB_COMMENT_LIMIT = 65_536
# The workflow finds its own comment by this line, to update it instead of adding another.
COMMENT_MARKER = "<!-- mlopsctl-diff -->"


@dataclass
class DiffReport:
    base: str  # how to name each side to a reader: "main (1a2b3c4d5e6f)"
    head: str
    roots: list[RootDiff] = field(default_factory=list)
    moves: list[model_review.PinMove] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)

    @property
    def shown_roots(self) -> list[RootDiff]:
        return [root for root in self.roots if root.status != "unchanged" or root.warnings]

    @property
    def has_changes(self) -> bool:
        return any(root.has_changes for root in self.roots)

    @property
    def has_errors(self) -> bool:
        return any(root.status == "error" for root in self.roots)

    def totals(self) -> tuple[int, int, int]:
        return (
            sum(root.count("added") for root in self.roots),
            sum(root.count("changed") for root in self.roots),
            sum(root.count("removed") for root in self.roots),
        )


def _files_and_roots(report: DiffReport) -> str:
    files, roots = len(report.changed_files), len(report.roots)
    return (
        f"{files} file{'' if files == 1 else 's'} changed; "
        f"{roots} kustomize root{' reads' if roots == 1 else 's read'} them"
    )


def _root_summary(root: RootDiff) -> str:
    counts = f"{root.count('added')} added, {root.count('changed')} changed, "
    counts += f"{root.count('removed')} removed"
    if root.status in ("added", "removed"):
        return f"root {root.status} ({counts})"
    if root.status in ("error", "not rendered"):
        return f"{root.status}: {root.message}"
    return counts


def _resource_heading(resource: ResourceDiff) -> str:
    heading = f"{resource.reference} {resource.change}"
    if resource.renamed_from:
        heading += f" (generated name, was {resource.renamed_from})"
    return heading


def text(report: DiffReport) -> str:
    added, changed, removed = report.totals()
    lines = [
        f"mlopsctl diff: {report.base} -> {report.head}",
        f"{_files_and_roots(report)}; resources: {added} added, {changed} changed, "
        f"{removed} removed",
    ]
    if report.moves:
        lines += ["", model_review.text(report.moves).rstrip()]
    for root in report.shown_roots:
        lines += ["", f"=== {root.root}: {_root_summary(root)}"]
        lines += [f"warning: {warning}" for warning in root.warnings]
        for resource in root.resources:
            lines += [f"--- {_resource_heading(resource)}", resource.diff.rstrip("\n")]
    if not report.has_changes and not report.has_errors:
        lines += ["", "no change to any rendered resource"]
    return "\n".join(lines) + "\n"


def as_json(report: DiffReport) -> str:
    document: dict[str, Any] = {
        "base": report.base,
        "head": report.head,
        "changed": report.has_changes,
        "errors": report.has_errors,
        "changedFiles": report.changed_files,
        "roots": [
            {
                "root": root.root,
                "status": root.status,
                "message": root.message,
                "warnings": root.warnings,
                "added": root.count("added"),
                "changed": root.count("changed"),
                "removed": root.count("removed"),
                "resources": [
                    {
                        "reference": resource.reference,
                        "change": resource.change,
                        "renamedFrom": resource.renamed_from,
                        "diff": resource.diff,
                    }
                    for resource in root.resources
                ],
            }
            for root in report.roots
        ],
        "models": [asdict(move) for move in report.moves],
    }
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def _fence(body: str) -> str:
    """A code fence longer than any run of backticks inside `body`, so it cannot be closed early."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def _escape(value: str) -> str:
    return value.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _resource_block(resource: ResourceDiff) -> str:
    fence = _fence(resource.diff)
    return (
        f"**{_escape(_resource_heading(resource))}**\n\n"
        f"{fence}diff\n{resource.diff.rstrip()}\n{fence}\n\n"
    )


def markdown_summary(report: DiffReport) -> str:
    added, changed, removed = report.totals()
    lines = [
        COMMENT_MARKER,
        f"### Rendered manifests: `{report.base}` → `{report.head}`",
        "",
    ]
    shown = report.shown_roots
    if shown:
        lines += ["| root | status | added | changed | removed |", "|---|---|---:|---:|---:|"]
        lines += [
            f"| `{root.root}` | {root.status} | {root.count('added')} | "
            f"{root.count('changed')} | {root.count('removed')} |"
            for root in shown
        ]
        lines.append("")
    lines.append(
        f"{_files_and_roots(report)}: **{added} added, {changed} changed, {removed} removed** "
        "resources."
        if report.has_changes or report.has_errors
        else f"{_files_and_roots(report)}; no rendered resource changes."
    )
    problems = [
        f"- `{root.root}`: {root.status}: {_escape(root.message)}"
        for root in shown
        if root.status in ("error", "not rendered")
    ]
    problems += [
        f"- `{root.root}`: {_escape(warning)}" for root in shown for warning in root.warnings
    ]
    if problems:
        lines += ["", *problems]
    if report.moves:
        lines += ["", model_review.markdown(report.moves).rstrip()]
    return "\n".join(lines) + "\n"


def markdown(
    report: DiffReport, limit: int = GITHUB_COMMENT_LIMIT, full_diff_name: str | None = None
) -> tuple[str, bool]:
    """(the comment, whether details were cut to stay within `limit` characters)."""
    summary = markdown_summary(report)
    blocks: list[tuple[RootDiff, list[str]]] = [
        (root, [_resource_block(resource) for resource in root.resources])
        for root in report.shown_roots
        if root.resources
    ]
    total_blocks = sum(len(resource_blocks) for _root, resource_blocks in blocks)
    where = (
        f"the full diff is in `{full_diff_name}`, uploaded with this workflow run"
        if full_diff_name
        else "run `mlopsctl diff` locally to see all of it"
    )
    # Room for the note a cut adds, so adding it can never push the comment over the limit.
    note_room = 300 + len(where)
    output = summary
    shown_blocks = 0
    cut = False
    for root, resource_blocks in blocks:
        opening = (
            f"\n<details><summary><code>{_escape(root.root)}</code>: "
            f"{_escape(_root_summary(root))}</summary>\n\n"
        )
        closing = "</details>\n"
        section = opening
        for block in resource_blocks:
            if len(output) + len(section) + len(block) + len(closing) + note_room > limit:
                cut = True
                break
            section += block
            shown_blocks += 1
        if section != opening:
            output += section + closing
        if cut:
            break
    if cut:
        output += (
            f"\n> [!NOTE]\n> Details cut at GitHub's {limit:,}-character comment limit: "
            f"{shown_blocks} of {total_blocks} resource diffs shown; {where}.\n"
        )
    if len(output) > limit:  # the summary alone is too long (thousands of roots): cut it too
        output = (
            output[: limit - note_room] + f"\n\n> Summary cut at {limit:,} characters; {where}.\n"
        )
        cut = True
    return output, cut


def exit_code(report: DiffReport) -> int:
    """As `argocd app diff`: 0 no change, 1 changes, 2 an error."""
    if report.has_errors:
        return 2
    return 1 if report.has_changes else 0

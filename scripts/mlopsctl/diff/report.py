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


def _shortened(diff: str, max_lines: int | None) -> str:
    lines = diff.rstrip("\n").split("\n")
    if max_lines is None or len(lines) <= max_lines:
        return diff.rstrip("\n")
    left = len(lines) - max_lines
    return "\n".join(
        [
            *lines[:max_lines],
            f"... {left:,} of {len(lines):,} lines left out (--max-lines-per-resource)",
        ]
    )


def text(report: DiffReport, max_lines_per_resource: int | None = None) -> str:
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
            lines += [
                f"--- {_resource_heading(resource)}",
                _shortened(resource.diff, max_lines_per_resource),
            ]
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


# What a reviewer must see first, in order; each resource diff goes to the first that claims it.
# Large generated data (dashboards' ConfigMaps, CRDs) comes last, so it cannot crowd out the rest.
LARGE_GENERATED_LINES = 200
_WORKLOAD_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}
)
_ACCESS_KINDS = frozenset(
    {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "NetworkPolicy"}
)
_PIN_OR_IMAGE = re.compile(r"models:/|\bimage:|\bnewTag:|\bdigest:")


def _kind(resource: ResourceDiff) -> str:
    return resource.reference.split("/", 1)[0].split(".", 1)[0]


def category(resource: ResourceDiff) -> str:
    """Where a resource diff goes in the comment's details (see CATEGORIES)."""
    kind = _kind(resource)
    if resource.change == "changed" and any(
        line[:1] in "+-" and not line.startswith(("+++", "---")) and _PIN_OR_IMAGE.search(line)
        for line in resource.diff.splitlines()
    ):
        return "Model pins and images"
    if resource.change == "removed":
        return "Removed"
    if kind == "CustomResourceDefinition" or (
        kind == "ConfigMap" and resource.lines_changed > LARGE_GENERATED_LINES
    ):
        return "Large generated data"
    if kind == "Secret":
        return "Secrets"
    if kind in _ACCESS_KINDS:
        return "RBAC and NetworkPolicies"
    if kind in _WORKLOAD_KINDS:
        return "Workloads"
    return "Other resources"


CATEGORIES = (
    "Model pins and images",
    "Removed",
    "Secrets",
    "RBAC and NetworkPolicies",
    "Workloads",
    "Other resources",
    "Large generated data",
)


@dataclass
class _Block:
    heading: str
    lines: list[str]  # the diff's lines, each with its newline

    @property
    def body_size(self) -> int:
        return sum(map(len, self.lines))

    def render(self, kept: int, cut_note: str) -> str:
        body = "".join(self.lines[:kept])
        fence = _fence(body)
        text = f"{self.heading}\n\n{fence}diff\n{body}{fence}\n"
        if kept < len(self.lines):
            left = len(self.lines) - kept
            text += f"_… {left:,} of {len(self.lines):,} lines left out here{cut_note}._\n"
        return text + "\n"


def _fair_shares(sizes: list[int], budget: int) -> list[int]:
    """Water-filling: each gets what it needs when that is under an equal share of what is
    left; the rest split what remains equally. Small diffs are never cut to make room."""
    shares = [0] * len(sizes)
    remaining, pending = budget, sorted(range(len(sizes)), key=lambda index: sizes[index])
    while pending:
        share = remaining // len(pending)
        index = pending[0]
        if sizes[index] <= share:
            shares[index] = sizes[index]
            remaining -= sizes[index]
            pending.pop(0)
            continue
        for index in pending:
            shares[index] = share
        break
    return shares


def _count(blocks: list[list[_Block]]) -> int:
    return sum(len(group) for group in blocks)


def _without_file_header(diff: str) -> list[str]:
    """The diff's lines without its `---`/`+++` file lines: the block's heading names it."""
    lines = diff.rstrip("\n").splitlines(keepends=True)
    while lines and lines[0].startswith(("--- ", "+++ ")):
        lines.pop(0)
    return lines


def _kept_lines(lines: list[str], allowance: int) -> int:
    used = kept = 0
    for line in lines:
        if used + len(line) > allowance:
            break
        used += len(line)
        kept += 1
    return kept


def markdown(
    report: DiffReport, limit: int = GITHUB_COMMENT_LIMIT, full_diff_name: str | None = None
) -> tuple[str, bool]:
    """(the comment, whether details were cut to stay within `limit` characters).

    Every changed resource is visible: each gets a fair share of the comment's room, and a diff
    larger than its share is cut inside with a note. Only when not even one line each fits are
    the resources listed by name with their counts."""
    summary = markdown_summary(report)
    where = (
        f"the full diff is in `{full_diff_name}`, uploaded with this workflow run"
        if full_diff_name
        else "run `mlopsctl diff` locally to see all of it"
    )
    grouped: dict[str, list[tuple[RootDiff, ResourceDiff]]] = {name: [] for name in CATEGORIES}
    for root in report.shown_roots:
        for resource in root.resources:
            grouped[category(resource)].append((root, resource))
    sections = [(name, entries) for name, entries in grouped.items() if entries]
    blocks = [
        [
            _Block(
                f"**`{_escape(root.root)}`: {_escape(_resource_heading(resource))}**",
                _without_file_header(resource.diff),
            )
            for root, resource in entries
        ]
        for _name, entries in sections
    ]
    headings = [f"\n#### {name} ({len(entries)})\n\n" for name, entries in sections]
    for group in blocks:
        for block in group:
            if block.lines and not block.lines[-1].endswith("\n"):
                block.lines[-1] += "\n"

    # With a handful of resources each cut says where the rest is; with many, the note at the
    # end says it once, so that the room goes to the diffs.
    cut_note = f"; {where}" if len(report.shown_roots) and _count(blocks) <= 20 else ""

    def assemble(kept: list[list[int]]) -> str:
        output = summary
        for heading, group, counts in zip(headings, blocks, kept, strict=True):
            output += heading + "".join(
                block.render(count, cut_note) for block, count in zip(group, counts, strict=True)
            )
        return output

    whole = assemble([[len(block.lines) for block in group] for group in blocks])
    if len(whole) <= limit:
        return whole, False
    flat = [block for group in blocks for block in group]
    total = len(flat)
    final_note = (
        f"\n> [!NOTE]\n> Details cut at GitHub's {limit:,}-character comment limit: all {total} "
        f"resource diffs are here, the longest shortened; {where}.\n"
    )
    # What every block costs with nothing of its body: heading, fences and its cut note.
    empty = len(assemble([[0 for _block in group] for group in blocks])) + len(final_note)
    budget = limit - empty
    first_lines = sum(len(block.lines[0]) for block in flat if block.lines)
    if budget >= first_lines:
        shares = iter(_fair_shares([block.body_size for block in flat], budget))
        kept = [[_kept_lines(block.lines, next(shares)) for block in group] for group in blocks]
        output = assemble(kept) + final_note
        if len(output) <= limit:
            return output, True
    return _listed(report, summary, sections, limit, where), True


def _listed(
    report: DiffReport,
    summary: str,
    sections: list[tuple[str, list[tuple[RootDiff, ResourceDiff]]]],
    limit: int,
    where: str,
) -> str:
    """Not one line of each diff fits: the resources by name, with their changed lines."""
    closing = (
        f"\n> [!NOTE]\n> Details cut at GitHub's {limit:,}-character comment limit: too many "
        f"resources for even one line of each diff; listed by name; {where}.\n"
    )
    note_room = 300 + len(where)
    output = summary
    for name, entries in sections:
        rows = [f"\n#### {name} ({len(entries)})\n\n| root | resource | change | lines |\n"]
        rows.append("|---|---|---|---:|\n")
        rows += [
            f"| `{_escape(root.root)}` | {_escape(resource.reference)} | {resource.change} | "
            f"{resource.lines_changed} |\n"
            for root, resource in entries
        ]
        output += "".join(rows)
    if len(output) + len(closing) <= limit:
        return output + closing
    # Thousands of resources: even the list is too long; the summary and the note stay whole.
    if len(summary) + note_room <= limit:
        return output[: limit - note_room].rsplit("\n", 1)[0] + "\n" + closing
    return summary[: limit - note_room] + f"\n\n> Summary cut at {limit:,} characters; {where}.\n"


def exit_code(report: DiffReport) -> int:
    """As `argocd app diff`: 0 no change, 1 changes, 2 an error."""
    if report.has_errors:
        return 2
    return 1 if report.has_changes else 0

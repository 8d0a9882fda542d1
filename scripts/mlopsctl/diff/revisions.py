"""Two revisions of the repository, rendered and compared: what a pull request does.

Only the kustomize roots that read a changed file are rendered, at the two revisions, each in
a git worktree of its own (the user's checkout is never switched), all in parallel.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlopsctl.base import git, inventory, kustomize, model_review
from mlopsctl.base.config import CONFIG_FILENAME, Config, load_config
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.kustomize import RenderResult
from mlopsctl.base.registry import Registry
from mlopsctl.base.resources import Resource, parse_render
from mlopsctl.base.toolchain import Toolchain
from mlopsctl.diff.ignore_differences import (
    IgnoreRule,
    application_ignore_rules,
    system_ignore_rules,
)
from mlopsctl.diff.manifests import RootDiff, diff_resources
from mlopsctl.diff.report import DiffReport


@dataclass(frozen=True)
class Revision:
    """One side of the comparison: a commit, or the working tree when `commit` is None."""

    label: str
    commit: str | None


@dataclass(frozen=True)
class Side:
    tree: Path
    config: Config
    roots: frozenset[str]


def _side(tree: Path, fallback: Config) -> Side:
    # Each revision is read with its own settings (a change may move render.exclude).
    config = load_config(tree) if (tree / CONFIG_FILENAME).is_file() else fallback
    return Side(tree, config, frozenset(kustomize.discover_roots(tree, config.render_exclude)))


@contextmanager
def _checked_out(repository: Path, revision: Revision, destination: Path) -> Iterator[Path]:
    if revision.commit is None:
        yield repository
        return
    with git.worktree(repository, revision.commit, destination) as tree:
        yield tree


def _ignore_rules(
    side: Side, toolchain: Toolchain, rendered: Mapping[str, RenderResult]
) -> tuple[dict[str, list[IgnoreRule]], list[IgnoreRule]]:
    """ignoreDifferences declared at this revision: per root (from the Applications that deploy
    it) and for every root (argocd-cm).

    An Application's rules are read from the Application as its root renders it: the file that
    writes them may be a shared base whose paths the environment fills in, or a patch with no
    source path of its own (shared defaults, or one inline in a kustomization). Only the roots
    that read such a file are rendered, reusing `rendered` (the head's renders made for the
    comparison), so roots that did not change are not rendered only to find their
    Applications. Returns (rules per root, rules for every root).
    """
    repository_url = side.config.repository_url
    documents: list[Resource] = []
    declaring: list[str] = []
    for directory, files in kustomize.walk_tree(side.tree, side.config.render_exclude):
        for name in files:
            if not name.endswith((".yaml", ".yml")):
                continue
            path = directory / name
            text = path.read_text(encoding="utf-8", errors="replace")
            if "ignoreDifferences" not in text:
                continue
            try:
                found = [
                    Resource("", body)
                    for body in yaml.safe_load_all(text)
                    if isinstance(body, dict)
                ]
            except yaml.YAMLError:
                continue  # kustomize reports broken YAML where it matters, when rendering
            documents.extend(found)
            if name in kustomize.KUSTOMIZATION_FILENAMES or any(
                _declares_application_rules(resource) for resource in found
            ):
                declaring.append(path.relative_to(side.tree).as_posix())
    by_root: dict[str, list[IgnoreRule]] = {}
    for root in kustomize.affected_roots(
        side.tree, declaring, side.config.render_exclude, side.roots
    ):
        result = rendered.get(root) or kustomize.render_root(
            side.tree, root, toolchain, allow_network=False
        )
        if result.rendered:
            patched = application_ignore_rules(parse_render(root, result.output), repository_url)
            for deployed_root, rules in patched.items():
                by_root.setdefault(deployed_root, []).extend(rules)
    return by_root, system_ignore_rules(documents)


def _declares_application_rules(resource: Resource) -> bool:
    """An Application document (whole, or a patch of others) with ignoreDifferences."""
    spec = resource.body.get("spec")
    return resource.kind == "Application" and isinstance(spec, dict) and "ignoreDifferences" in spec


def compare(
    repository: Path,
    config: Config,
    toolchain: Toolchain,
    base: Revision,
    head: Revision,
    allow_network: bool = False,
    registry: Registry | None = None,
    no_registry_reason: str = "no MLflow server given",
) -> DiffReport:
    """Render what changed between `base` and `head` and compare it resource by resource."""
    assert base.commit is not None, "the base is always a commit"
    changed = git.changed_files(repository, base.commit, head.commit)
    with (
        tempfile.TemporaryDirectory(prefix="mlopsctl-diff-") as scratch,
        _checked_out(repository, base, Path(scratch) / "base") as base_tree,
        _checked_out(repository, head, Path(scratch) / "head") as head_tree,
    ):
        before = _side(base_tree, config)
        after = _side(head_tree, config)
        affected = sorted(
            set(kustomize.affected_roots(base_tree, changed, roots=before.roots))
            | set(kustomize.affected_roots(head_tree, changed, roots=after.roots))
        )
        roots = _compare_roots(affected, before, after, toolchain, allow_network)
        moves = model_review.pin_moves(
            inventory.scan(base_tree, before.config.render_exclude),
            inventory.scan(head_tree, after.config.render_exclude),
        )
    moves = model_review.with_facts(moves, registry, no_registry_reason)
    return DiffReport(base.label, head.label, roots, moves, changed)


def _compare_roots(
    roots: Sequence[str],
    before: Side,
    after: Side,
    toolchain: Toolchain,
    allow_network: bool,
) -> list[RootDiff]:
    sides = (before, after)
    jobs = [(index, root) for root in roots for index in (0, 1) if root in sides[index].roots]
    workers = min(len(jobs), 2 * (os.cpu_count() or 1)) or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        renders = pool.map(
            lambda job: kustomize.render_root(sides[job[0]].tree, job[1], toolchain, allow_network),
            jobs,
        )
        rendered = dict(zip(jobs, renders, strict=True))
    by_root, everywhere = _ignore_rules(
        after, toolchain, {root: result for (side, root), result in rendered.items() if side == 1}
    )
    results = []
    for root in roots:
        old = rendered.get((0, root))
        new = rendered.get((1, root))
        skipped = [result for result in (old, new) if result is not None and result.skipped]
        if skipped:
            results.append(
                RootDiff(
                    root,
                    "not rendered",
                    message=f"needs the network ({'; '.join(skipped[0].network)}); "
                    "pass --network to compare it",
                )
            )
            continue
        if new is not None and new.error is not None:
            results.append(RootDiff(root, "error", message=f"does not render: {new.error}"))
            continue
        warnings = []
        old_resources: list[Resource] | None = None
        if old is not None and old.error is not None:
            warnings.append(f"did not render at the base ({old.error}): compared with nothing")
            old_resources = []
        elif old is not None:
            old_resources = parse_render(root, old.output)
        new_resources = parse_render(root, new.output) if new is not None else None
        rules = [*by_root.get(root, []), *everywhere]
        result = diff_resources(root, old_resources, new_resources, rules)
        result.warnings = warnings + result.warnings
        results.append(result)
    return results


def default_base(repository: Path, branch: str) -> str:
    """Where a pull request would merge: origin/<branch> when there is one, else <branch>."""
    for candidate in (f"origin/{branch}", branch):
        if git.commit_of(repository, candidate) is not None:
            return candidate
    raise MlopsctlError(f"neither origin/{branch} nor {branch} exists here: pass --base REF")

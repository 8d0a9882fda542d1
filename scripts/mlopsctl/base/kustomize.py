"""Kustomize roots: finding them, telling which need the network, and rendering them."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from mlopsctl.base import timings
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.resources import YAML_LOADER
from mlopsctl.base.toolchain import Toolchain

KUSTOMIZATION_FILENAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# Directories that never hold platform roots: tooling, caches, and test fixtures (which are
# broken on purpose).
ALWAYS_EXCLUDED = frozenset({".git", ".venv", ".tools", "__pycache__", "node_modules", "build"})
_REMOTE_REFERENCE = re.compile(
    r"^(https?://|ssh://|git@|git::|github\.com/|gitlab\.com/|bitbucket\.org/)|\?ref=|\.git//"
)
# Fields of a kustomization whose entries name other files or directories.
_REFERENCE_FIELDS = ("resources", "components", "bases")


def kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_FILENAMES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def load_kustomization(path: Path) -> dict[str, Any]:
    """The kustomization at `path`, parsed once per content: the promoter reads the same
    unchanged files every pass, and an edited file (whatever its timestamps) is parsed again.
    Callers must not change what it returns: it is shared."""
    return _parse_kustomization(path, path.read_text(encoding="utf-8"))


@lru_cache(maxsize=4096)
def _parse_kustomization(path: Path, text: str) -> dict[str, Any]:
    try:
        document = yaml.load(text, Loader=YAML_LOADER)
    except yaml.YAMLError as error:
        raise MlopsctlError(f"{path}: not valid YAML: {error}") from error
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise MlopsctlError(
            f"{path}: a kustomization must be a mapping, found {type(document).__name__}"
        )
    return document


def is_remote(reference: str) -> bool:
    return bool(_REMOTE_REFERENCE.search(reference))


def walk_tree(repository: Path, exclude: Iterable[str] = ()) -> Iterator[tuple[Path, list[str]]]:
    """(directory, file names) of the platform tree, sorted, without tooling, caches or
    excluded directories (a name anywhere, or a repository-relative path)."""
    excluded = set(ALWAYS_EXCLUDED) | set(exclude)
    for directory, subdirectories, files in os.walk(repository):
        current = Path(directory)
        relative = current.relative_to(repository).as_posix()
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if name not in excluded
            and f"{relative}/{name}".removeprefix("./") not in excluded
            and not name.startswith(".")
        )
        yield current, sorted(files)


def discover_roots(repository: Path, exclude: Iterable[str] = ()) -> list[str]:
    """Every directory with a buildable kustomization (not a Component), sorted, repo-relative."""
    roots: list[str] = []
    for directory, _files in walk_tree(repository, exclude):
        found = kustomization_file(directory)
        if found is None or directory == repository:
            continue
        if load_kustomization(found).get("kind") == "Component":
            continue
        roots.append(directory.relative_to(repository).as_posix())
    return sorted(roots)


def network_needs(directory: Path) -> list[str]:
    """Why building `directory` would reach the network (remote bases, Helm charts), if it would."""
    return _network_needs(directory.resolve(), frozenset())


def _network_needs(directory: Path, visiting: frozenset[Path]) -> list[str]:
    found = kustomization_file(directory)
    if found is None or directory in visiting:
        return []
    document = load_kustomization(found)
    reasons: list[str] = []
    for chart in document.get("helmCharts") or []:
        name = chart.get("name", "?") if isinstance(chart, dict) else "?"
        reasons.append(f"{found.name}: helmCharts pulls chart {name!r}")
    for field_name in _REFERENCE_FIELDS:
        for reference in document.get(field_name) or []:
            if not isinstance(reference, str):
                continue
            if is_remote(reference):
                reasons.append(f"{found.name}: {field_name} fetches {reference}")
                continue
            target = (directory / reference).resolve()
            if target.is_dir():
                reasons.extend(
                    f"{Path(os.path.relpath(target, directory)).as_posix()}/{reason}"
                    for reason in _network_needs(target, visiting | {directory})
                )
    return reasons


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for child in value.values():
            yield from _strings(child)
    elif isinstance(value, list):
        for child in value:
            yield from _strings(child)


def read_directories(
    directory: Path, known: dict[Path, frozenset[Path]] | None = None
) -> frozenset[Path]:
    """Directories holding files a build of `directory` can read: every kustomization it
    reaches, and the folders of every file they name (patches, generator files, values).

    Conservative on purpose: any string in a kustomization that names an existing path counts
    (generator entries may be `key=path`), so a root is never thought unaffected by a file it
    reads. Reading too much only renders a root more than needed. `known` carries what earlier
    calls found for the same tree (the bases that many overlays share are read once).
    """
    return _reads_of(directory.resolve(), {} if known is None else known, set())


def _reads_of(
    directory: Path, known: dict[Path, frozenset[Path]], visiting: set[Path]
) -> frozenset[Path]:
    if directory in known:
        return known[directory]
    if directory in visiting:  # a cycle (kustomize refuses it): already counted on the way in
        return frozenset()
    visiting.add(directory)
    reads = {directory}
    found = kustomization_file(directory)
    if found is not None:
        for text in _strings(load_kustomization(found)):
            for candidate in {text, text.partition("=")[2]}:
                if (
                    not candidate
                    or "\n" in candidate
                    or len(candidate) > 1024
                    or is_remote(candidate)
                ):
                    continue
                try:
                    joined = directory / candidate
                    # Most strings (labels, literals) name nothing: one stat says so, before
                    # the symlink-resolving walk a path that exists gets.
                    if not os.path.lexists(joined):
                        continue
                    target = joined.resolve()
                    if target.is_dir():
                        reads |= _reads_of(target, known, visiting)
                    elif target.is_file():
                        reads.add(target.parent)
                except (OSError, ValueError):  # not a path after all (too long, NUL byte)
                    continue
    visiting.discard(directory)
    known[directory] = frozenset(reads)
    return known[directory]


def affected_roots(
    repository: Path,
    files: Iterable[str],
    exclude: Iterable[str] = (),
    roots: Iterable[str] | None = None,
) -> list[str]:
    """The kustomize roots of `repository` (`roots` when the caller has found them already)
    whose build reads any of `files` (repo-relative)."""
    directories = {(repository / file).resolve().parent for file in files}
    if not directories:
        return []
    candidates = discover_roots(repository, exclude) if roots is None else sorted(roots)
    known: dict[Path, frozenset[Path]] = {}
    return [root for root in candidates if directories & read_directories(repository / root, known)]


@dataclass
class RenderResult:
    root: str
    output: str = ""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    network: list[str] = field(default_factory=list)

    @property
    def rendered(self) -> bool:
        return self.error is None and not self.skipped

    @property
    def skipped(self) -> bool:
        return bool(self.network) and not self.output and self.error is None


def _warnings_from(stderr: str) -> list[str]:
    return [line.lstrip("# ").strip() for line in stderr.splitlines() if line.strip()]


def render_root(
    repository: Path, root: str, toolchain: Toolchain, allow_network: bool
) -> RenderResult:
    directory = repository / root
    result = RenderResult(root=root, network=network_needs(directory))
    if result.network and not allow_network:
        return result
    command = toolchain.kustomize_build(directory)
    if result.network:
        command.append("--enable-helm")
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        message = completed.stderr.strip().removeprefix("error: ").strip()
        result.error = message or f"kustomize exited with {completed.returncode}"
        return result
    result.output = completed.stdout
    result.warnings = _warnings_from(completed.stderr)
    return result


def render_roots(
    repository: Path,
    roots: Sequence[str],
    toolchain: Toolchain,
    allow_network: bool = False,
    jobs: int | None = None,
) -> list[RenderResult]:
    """Render roots in parallel (each is a kustomize process); results keep the roots' order."""
    workers = jobs or min(len(roots), 2 * (os.cpu_count() or 1)) or 1
    with timings.phase("render"), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            pool.map(lambda root: render_root(repository, root, toolchain, allow_network), roots)
        )

"""Which source file a rendered object comes from, so findings name a file a person can open."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from mlopsctl.base.kustomize import is_remote, kustomization_file, load_kustomization
from mlopsctl.base.resources import Resource


@cache
def _documents(path: Path, modified_ns: int) -> tuple[tuple[str, str], ...]:
    """(kind, name) of each object in a YAML file; modified_ns keys the cache to the content."""
    try:
        loaded = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError):
        return ()
    return tuple(
        (str(document.get("kind", "")), str((document.get("metadata") or {}).get("name", "")))
        for document in loaded
        if isinstance(document, dict)
    )


def _patch_paths(document: dict[str, Any]) -> list[str]:
    paths = []
    for patch in document.get("patches") or []:
        if isinstance(patch, dict) and isinstance(patch.get("path"), str):
            paths.append(patch["path"])
    return paths


class SourceIndex:
    def __init__(self, repository: Path) -> None:
        self.repository = repository.resolve()

    def _relative(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.repository).as_posix()
        except ValueError:
            return str(path)

    @cache  # noqa: B019 - one index lives for one validation run
    def _files(self, directory: Path) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
        """(files defining objects, patch files) reachable from the kustomization in directory."""
        found = kustomization_file(directory)
        if found is None:
            return (), ()
        document = load_kustomization(found)
        definitions: list[Path] = []
        patches = [directory / path for path in _patch_paths(document)]
        for field_name in ("resources", "components", "bases"):
            for reference in document.get(field_name) or []:
                if not isinstance(reference, str) or is_remote(reference):
                    continue
                target = (directory / reference).resolve()
                if target.is_dir():
                    nested_definitions, nested_patches = self._files(target)
                    definitions.extend(nested_definitions)
                    patches.extend(nested_patches)
                elif target.is_file():
                    definitions.append(target)
        return tuple(definitions), tuple(patches)

    def kustomization_of(self, root: str) -> str:
        found = kustomization_file(self.repository / root)
        return self._relative(found) if found else root

    def locate(self, resource: Resource) -> str:
        """The file that defines `resource`, else a patch naming it, else its root's kustomization.

        Generated ConfigMaps and Secrets carry no source file; they fall to the kustomization.
        """
        definitions, patches = self._files(self.repository / resource.root)
        for candidates in (definitions, patches):
            for path in candidates:
                if path.is_file() and (resource.kind, resource.name) in _documents(
                    path, path.stat().st_mtime_ns
                ):
                    return self._relative(path)
        # A patch may have renamed it: the only definition of its kind is then its source.
        same_kind = [
            path
            for path in definitions
            if path.is_file()
            for kind, _name in _documents(path, path.stat().st_mtime_ns)
            if kind == resource.kind
        ]
        if len(same_kind) == 1:
            return self._relative(same_kind[0])
        return self.kustomization_of(resource.root)

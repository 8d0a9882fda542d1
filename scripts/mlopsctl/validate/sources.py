"""Which source file a rendered object comes from, so findings name a file a person can open."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class DefiningFile:
    """A file of objects, with the name prefix and suffix the build adds to them."""

    path: Path
    prefix: str = ""
    suffix: str = ""

    def objects(self) -> set[tuple[str, str]]:
        """(kind, name) as written and as built, for each object of the file."""
        written = _documents(self.path, self.path.stat().st_mtime_ns)
        return set(written) | {
            (kind, f"{self.prefix}{name}{self.suffix}") for kind, name in written
        }


class SourceIndex:
    def __init__(self, repository: Path) -> None:
        self.repository = repository.resolve()

    def _relative(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.repository).as_posix()
        except ValueError:
            return str(path)

    @cache  # noqa: B019 - one index lives for one validation run
    def _files(self, directory: Path) -> tuple[tuple[DefiningFile, ...], tuple[Path, ...]]:
        """(files defining objects, patch files) reachable from the kustomization in directory.

        Each defining file comes with the name prefix and suffix the build adds to its objects
        (`nameSuffix: -staging` makes `promoter` of a shared base `promoter-staging`).
        """
        found = kustomization_file(directory)
        if found is None:
            return (), ()
        document = load_kustomization(found)
        prefix = str(document.get("namePrefix") or "")
        suffix = str(document.get("nameSuffix") or "")
        definitions: list[DefiningFile] = []
        patches = [directory / path for path in _patch_paths(document)]
        for field_name in ("resources", "components", "bases"):
            for reference in document.get(field_name) or []:
                if not isinstance(reference, str) or is_remote(reference):
                    continue
                target = (directory / reference).resolve()
                if target.is_dir():
                    nested_definitions, nested_patches = self._files(target)
                    definitions.extend(
                        DefiningFile(nested.path, prefix + nested.prefix, nested.suffix + suffix)
                        for nested in nested_definitions
                    )
                    patches.extend(nested_patches)
                elif target.is_file():
                    definitions.append(DefiningFile(target, prefix, suffix))
        return tuple(definitions), tuple(patches)

    def kustomization_of(self, root: str) -> str:
        found = kustomization_file(self.repository / root)
        return self._relative(found) if found else root

    def locate(self, resource: Resource) -> str:
        """The file that defines `resource`, else a patch naming it, else its root's kustomization.

        Generated ConfigMaps and Secrets carry no source file; they fall to the kustomization.
        """
        definitions, patches = self._files(self.repository / resource.root)
        wanted = (resource.kind, resource.name)
        for definition in definitions:
            if definition.path.is_file() and wanted in definition.objects():
                return self._relative(definition.path)
        for path in patches:
            if path.is_file() and wanted in _documents(path, path.stat().st_mtime_ns):
                return self._relative(path)
        # A patch may have renamed it: the only definition of its kind is then its source.
        same_kind = [
            definition.path
            for definition in definitions
            if definition.path.is_file()
            for kind, _name in _documents(definition.path, definition.path.stat().st_mtime_ns)
            if kind == resource.kind
        ]
        if len(same_kind) == 1:
            return self._relative(same_kind[0])
        return self.kustomization_of(resource.root)

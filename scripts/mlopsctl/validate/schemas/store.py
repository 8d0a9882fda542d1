"""Schema checks: strict Kubernetes schemas for built-in kinds, the project's own strict schemas
for custom resources, and kubeconform when it is installed.

Schema files for custom resources follow kubeconform's layout,
`<group>/<kind lowercased>_<version>.json`, so one directory serves both checkers. kubeconform
reads the built-in kinds' schemas offline too: the strict ones kubernetes-validate ships, made
standalone once into a cache directory (kubeconform's own default would download them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources as package_resources
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions
from referencing import Registry, Resource

from mlopsctl.base.resources import Resource as KubernetesResource
from mlopsctl.base.resources import field_path

PROJECT_SCHEMA_DIR = Path(__file__).parent


@dataclass(frozen=True)
class SchemaProblem:
    field: str
    message: str


def _kubernetes_schema_dir(kubernetes_version: str) -> Path:
    base = package_resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    directory = Path(str(base)) / f"v{kubernetes_version}.0-local-strict"
    if not directory.is_dir():
        from mlopsctl.base.errors import MlopsctlError

        raise MlopsctlError(
            f"kubernetes-validate has no strict schemas for Kubernetes {kubernetes_version} "
            f"(looked in {directory})"
        )
    return directory


_DEFINITIONS_REFERENCE = "/api/_definitions.json#/$defs/"


def kubeconform_schema_dir(kubernetes_version: str, cache_root: Path | None = None) -> Path:
    """A directory in kubeconform's layout (`v<version>.0-standalone-strict/<file>.json`) with
    kubernetes-validate's strict schemas made standalone: each file carries the definitions it
    reaches. Built once per kubernetes-validate and Kubernetes version; a half-built directory
    is never used (built beside, then renamed)."""
    import kubernetes_validate.version

    source = _kubernetes_schema_dir(kubernetes_version)
    root = (
        cache_root
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "mlopsctl"
        / "kubeconform-schemas"
        / kubernetes_validate.version.__version__
    )
    directory = root / f"v{kubernetes_version}.0-standalone-strict"
    if directory.is_dir():
        return root
    root.mkdir(parents=True, exist_ok=True)
    definitions: dict[str, Any] = json.loads((source / "_definitions.json").read_text())["$defs"]
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    for path in source.glob("*.json"):
        if path.name in ("_definitions.json", "all.json"):
            continue
        text = path.read_text().replace(_DEFINITIONS_REFERENCE, "#/$defs/")
        schema = json.loads(text)
        reached: dict[str, Any] = {}
        pending = [text]
        while pending:
            for name in _references(pending.pop()):
                if name not in reached and name in definitions:
                    reached[name] = json.loads(
                        json.dumps(definitions[name]).replace(_DEFINITIONS_REFERENCE, "#/$defs/")
                    )
                    pending.append(json.dumps(reached[name]))
        if reached:
            schema["$defs"] = reached
        (scratch / path.name).write_text(json.dumps(schema))
    try:
        scratch.rename(directory)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)  # another process built it first
    return root


def _references(text: str) -> list[str]:
    marker = '"#/$defs/'
    names = []
    start = text.find(marker)
    while start != -1:
        end = text.find('"', start + len(marker))
        names.append(text[start + len(marker) : end])
        start = text.find(marker, end)
    return names


def _builtin_schema_name(api_version: str, kind: str) -> str:
    """kubernetes-validate's file name: apps/v1 Deployment -> deployment-apps-v1.json."""
    group, _, version = api_version.rpartition("/")
    prefix = group.split(".")[0] if group else ""
    return f"{kind.lower()}-{prefix}-{version}.json" if prefix else f"{kind.lower()}-{version}.json"


def _is_builtin_group(group: str) -> bool:
    return group == "" or "." not in group or group.endswith(".k8s.io")


def _modified_ns(path: Path) -> int:
    return path.stat().st_mtime_ns


@cache
def _definitions_registry(path: Path, modified_ns: int) -> Registry[Any]:
    """The registry of kubernetes-validate's shared definitions, read once per process (the
    promoter validates every pass): keyed by the file and its modification time, so a changed
    file is read again."""
    del modified_ns  # only part of the key
    definitions = json.loads(path.read_text())
    return Resource.from_contents(definitions) @ Registry()


@cache
def _cached_validator(
    path: Path, modified_ns: int, definitions: Path | None
) -> jsonschema.protocols.Validator:
    """One compiled validator per schema file (and version of it) and definitions file."""
    del modified_ns  # only part of the key
    schema = json.loads(path.read_text())
    if definitions is None:
        return jsonschema.Draft202012Validator(schema)
    registry = _definitions_registry(definitions, _modified_ns(definitions))
    return jsonschema.Draft202012Validator(schema, registry=registry)


class SchemaStore:
    """Finds and caches one validator per (apiVersion, kind)."""

    def __init__(
        self,
        kubernetes_version: str,
        extra_dirs: Iterable[Path] = (),
        include_project_schemas: bool = True,
    ) -> None:
        self.kubernetes_version = kubernetes_version
        self.custom_dirs = [*extra_dirs, *([PROJECT_SCHEMA_DIR] if include_project_schemas else [])]
        self._validators: dict[tuple[str, str], jsonschema.protocols.Validator | None] = {}

    @cached_property
    def _builtin_dir(self) -> Path:
        return _kubernetes_schema_dir(self.kubernetes_version)

    def custom_schema_path(self, api_version: str, kind: str) -> Path | None:
        group, _, version = api_version.rpartition("/")
        for directory in self.custom_dirs:
            candidate = directory / group / f"{kind.lower()}_{version}.json"
            if candidate.is_file():
                return candidate
        return None

    def custom_schema(self, api_version: str, kind: str) -> dict[str, Any] | None:
        path = self.custom_schema_path(api_version, kind)
        return json.loads(path.read_text()) if path else None

    def validator(self, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
        key = (api_version, kind)
        if key not in self._validators:
            self._validators[key] = self._load(api_version, kind)
        return self._validators[key]

    def _load(self, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
        custom = self.custom_schema_path(api_version, kind)
        if custom is not None:
            return _cached_validator(custom, _modified_ns(custom), None)
        group = api_version.rpartition("/")[0]
        if not _is_builtin_group(group):
            return None
        path = self._builtin_dir / _builtin_schema_name(api_version, kind)
        if not path.is_file():
            return None
        return _cached_validator(path, _modified_ns(path), self._builtin_dir / "_definitions.json")

    def check(self, resource: KubernetesResource) -> list[SchemaProblem] | None:
        """Problems with `resource`, or None when no schema is known for its kind."""
        validator = self.validator(resource.api_version, resource.kind)
        if validator is None:
            return None
        problems = []
        for error in validator.iter_errors(resource.body):
            # oneOf/anyOf failures carry the useful message in their best sub-error.
            best = jsonschema.exceptions.best_match(error.context) if error.context else error
            problems.append(SchemaProblem(field_path(best.absolute_path), best.message))
        return problems

    def is_cluster_scoped(self, api_version: str, kind: str) -> bool | None:
        """From the project schema's `x-kubernetes-scope`; None when the schema does not say."""
        custom = self.custom_schema(api_version, kind)
        if custom is None:
            return None
        scope = custom.get("x-kubernetes-scope")
        return None if scope is None else scope == "Cluster"


def kubeconform_problems(
    kubeconform: str, kubernetes_version: str, documents: dict[str, str]
) -> dict[tuple[str, str, str], list[SchemaProblem]]:
    """Problems kubeconform finds in each root's rendered `documents`, keyed by (root, kind,
    name) (its report names no namespace; each root is a file of its own), from local schemas:
    the built-in kinds' from kubernetes-validate (made standalone), the custom kinds' from the
    project's schema directory. A kind with neither is left to SchemaStore
    (-ignore-missing-schemas), which reports it as having no schema.
    """
    builtin = kubeconform_schema_dir(kubernetes_version)
    command = [
        kubeconform,
        "-strict",
        "-summary",
        "-output",
        "json",
        "-ignore-missing-schemas",
        "-kubernetes-version",
        f"{kubernetes_version}.0",
        "-schema-location",
        f"{builtin}/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}/"
        "{{ .ResourceKind }}{{ .KindSuffix }}.json",
        "-schema-location",
        f"{PROJECT_SCHEMA_DIR}/"
        "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json",
    ]
    with tempfile.TemporaryDirectory(prefix="mlopsctl-kubeconform-") as scratch:
        roots = {f"{index}.yaml": root for index, root in enumerate(documents)}
        for file_name, root in roots.items():
            (Path(scratch) / file_name).write_text(documents[root], encoding="utf-8")
        command.extend(str(Path(scratch) / file_name) for file_name in roots)
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(completed.stdout)
    except ValueError as error:
        from mlopsctl.base.errors import MlopsctlError

        raise MlopsctlError(
            f"kubeconform gave no JSON report (exit code {completed.returncode}): "
            f"{completed.stderr.strip()}"
        ) from error
    problems: dict[tuple[str, str, str], list[SchemaProblem]] = {}
    for entry in report.get("resources", []):
        if entry.get("status") not in ("statusInvalid", "statusError"):
            continue
        source = roots.get(Path(str(entry.get("filename", ""))).name)
        if source is None:
            continue
        key = (source, str(entry.get("kind", "")), str(entry.get("name", "")))
        found = _kubeconform_details(str(entry.get("msg", "")))
        if not found:
            found = [
                SchemaProblem(
                    _pointer_to_field(str(detail.get("path", ""))), str(detail.get("msg"))
                )
                for detail in entry.get("validationErrors") or []
            ] or [SchemaProblem("", str(entry.get("msg", "")))]
        problems.setdefault(key, []).extend(found)
    return problems


# kubeconform 0.7+ reports one "validation failed" per resource and puts each failure in its
# message instead: "... - at '/spec/replicas': got string, want integer   - at '/spec': ...".
_KUBECONFORM_DETAIL = re.compile(r"- at '([^']*)': (.*?)(?=\s+- at '|$)")


def _kubeconform_details(message: str) -> list[SchemaProblem]:
    return [
        SchemaProblem(_pointer_to_field(pointer), detail.strip())
        for pointer, detail in _KUBECONFORM_DETAIL.findall(message)
        if detail.strip() != "validation failed"
    ]


def _pointer_to_field(pointer: str) -> str:
    """/spec/containers/0/image -> spec.containers[0].image (the other checkers' field paths)."""
    field = ""
    for part in filter(None, pointer.split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        field += f"[{part}]" if part.isdigit() else (f".{part}" if field else part)
    return field

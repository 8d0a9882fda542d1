"""Schema checks: strict Kubernetes schemas for built-in kinds, the project's own strict schemas
for custom resources, and kubeconform when it is on PATH.

Schema files for custom resources follow kubeconform's layout,
`<group>/<kind lowercased>_<version>.json`, so one directory serves both checkers.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from importlib import resources as package_resources
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions
from referencing import Registry, Resource

from mlopsctl.resources import Resource as KubernetesResource
from mlopsctl.resources import field_path

PROJECT_SCHEMA_DIR = Path(__file__).parent / "schemas"


@dataclass(frozen=True)
class SchemaProblem:
    field: str
    message: str


def _kubernetes_schema_dir(kubernetes_version: str) -> Path:
    base = package_resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    directory = Path(str(base)) / f"v{kubernetes_version}.0-local-strict"
    if not directory.is_dir():
        from mlopsctl.errors import MlopsctlError

        raise MlopsctlError(
            f"kubernetes-validate has no strict schemas for Kubernetes {kubernetes_version} "
            f"(looked in {directory})"
        )
    return directory


def _builtin_schema_name(api_version: str, kind: str) -> str:
    """kubernetes-validate's file name: apps/v1 Deployment -> deployment-apps-v1.json."""
    group, _, version = api_version.rpartition("/")
    prefix = group.split(".")[0] if group else ""
    return f"{kind.lower()}-{prefix}-{version}.json" if prefix else f"{kind.lower()}-{version}.json"


def _is_builtin_group(group: str) -> bool:
    return group == "" or "." not in group or group.endswith(".k8s.io")


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

    @cached_property
    def _builtin_registry(self) -> Registry[Any]:
        definitions = json.loads((self._builtin_dir / "_definitions.json").read_text())
        return Resource.from_contents(definitions) @ Registry()

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
        custom = self.custom_schema(api_version, kind)
        if custom is not None:
            return jsonschema.Draft202012Validator(custom)
        group = api_version.rpartition("/")[0]
        if not _is_builtin_group(group):
            return None
        path = self._builtin_dir / _builtin_schema_name(api_version, kind)
        if not path.is_file():
            return None
        schema = json.loads(path.read_text())
        return jsonschema.Draft202012Validator(schema, registry=self._builtin_registry)

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
    kubeconform: str, kubernetes_version: str, documents: str
) -> dict[tuple[str, str, str], list[SchemaProblem]]:
    """Built-in kinds checked by kubeconform; problems keyed by (kind, namespace, name).

    Custom kinds are left to SchemaStore (-ignore-missing-schemas), so they get the same strict
    project schemas whichever checker handles the built-in kinds.
    """
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
        "default",
        "-",
    ]
    completed = subprocess.run(
        command, input=documents, capture_output=True, text=True, check=False
    )
    try:
        report = json.loads(completed.stdout)
    except ValueError as error:
        from mlopsctl.errors import MlopsctlError

        raise MlopsctlError(
            f"kubeconform gave no JSON report (exit code {completed.returncode}): "
            f"{completed.stderr.strip()}"
        ) from error
    problems: dict[tuple[str, str, str], list[SchemaProblem]] = {}
    for entry in report.get("resources", []):
        if entry.get("status") not in ("statusInvalid", "statusError"):
            continue
        key = (entry.get("kind", ""), entry.get("namespace", "") or "", entry.get("name", ""))
        details = entry.get("validationErrors") or [{"path": "", "msg": entry.get("msg", "")}]
        problems.setdefault(key, []).extend(
            SchemaProblem(
                str(detail.get("path", "")).strip("/").replace("/", "."), str(detail.get("msg", ""))
            )
            for detail in details
        )
    return problems

"""The repository's `mlopsctl.yaml`: what the tool needs to know about the tree it manages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mlopsctl.errors import MlopsctlError

CONFIG_FILENAME = "mlopsctl.yaml"

_SKIP_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "reason"],
    "properties": {
        "apiVersion": {"type": "string", "minLength": 1},
        "kind": {"type": "string", "minLength": 1},
        "reason": {"type": "string", "minLength": 1},
    },
}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["repository", "environments", "kubernetesVersion"],
    "properties": {
        "repository": {
            "type": "object",
            "additionalProperties": False,
            "required": ["url"],
            "properties": {"url": {"type": "string", "minLength": 1}},
        },
        "environments": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$"},
        },
        "kubernetesVersion": {"type": "string", "pattern": r"^\d+\.\d+$"},
        "render": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "exclude": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
        },
        "validate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "skipSchemas": {"type": "array", "items": _SKIP_SCHEMA},
                "upstreamCRDs": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^https?://"},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class SkippedSchema:
    api_version: str
    kind: str
    reason: str


@dataclass(frozen=True)
class Config:
    repository_url: str
    environments: tuple[str, ...]
    kubernetes_version: str
    render_exclude: tuple[str, ...] = ()
    skipped_schemas: tuple[SkippedSchema, ...] = ()
    upstream_crds: tuple[str, ...] = field(default_factory=tuple)


def find_repository_root(start: Path) -> Path:
    """The nearest directory at or above `start` that holds mlopsctl.yaml."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / CONFIG_FILENAME).is_file():
            return candidate
    raise MlopsctlError(
        f"no {CONFIG_FILENAME} in {start} or any parent directory; "
        "run mlopsctl inside the platform repository or pass --repo"
    )


def load_config(repository_root: Path) -> Config:
    path = repository_root / CONFIG_FILENAME
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MlopsctlError(f"{path}: cannot read: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise MlopsctlError(f"{path}: not valid YAML: {error}") from error
    problems = sorted(
        jsonschema.Draft202012Validator(CONFIG_SCHEMA).iter_errors(document),
        key=lambda error: list(error.absolute_path),
    )
    if problems:
        first = problems[0]
        location = ".".join(str(part) for part in first.absolute_path) or "(top level)"
        raise MlopsctlError(f"{path}: {location}: {first.message}")
    validate_section = document.get("validate", {})
    return Config(
        repository_url=document["repository"]["url"],
        environments=tuple(document["environments"]),
        kubernetes_version=document["kubernetesVersion"],
        render_exclude=tuple(document.get("render", {}).get("exclude", [])),
        skipped_schemas=tuple(
            SkippedSchema(item["apiVersion"], item["kind"], item["reason"])
            for item in validate_section.get("skipSchemas", [])
        ),
        upstream_crds=tuple(validate_section.get("upstreamCRDs", [])),
    )

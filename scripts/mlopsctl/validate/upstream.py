"""Upstream CRD schemas at pinned versions, for checks where the network is available.

Each CRD's openAPIV3Schema becomes a strict JSON Schema (unknown fields fail, except where the
CRD itself preserves them), written in kubeconform's layout beside the project's own.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from mlopsctl.base.errors import MlopsctlError

FETCH_TIMEOUT_SECONDS = 30


def strict(schema: Any) -> Any:
    """The schema with additionalProperties: false wherever the CRD lists the properties."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: strict(value) for key, value in schema.items()}
    if converted.pop("x-kubernetes-int-or-string", False):
        converted.pop("type", None)
        converted["type"] = ["integer", "string"]
    preserves = converted.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in converted and "additionalProperties" not in converted and not preserves:
        converted["additionalProperties"] = False
    return converted


def _fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response:
            body: bytes = response.read()
            return body.decode("utf-8")
    except (urllib.error.URLError, TimeoutError, UnicodeDecodeError) as error:
        raise MlopsctlError(f"could not fetch upstream CRD {url}: {error}") from error


def write_crd_schemas(urls: Iterable[str], destination: Path) -> list[str]:
    """Fetch each CRD and write one schema per served version; returns what was written."""
    written = []
    for url in urls:
        try:
            documents = list(yaml.safe_load_all(_fetch(url)))
        except yaml.YAMLError as error:
            raise MlopsctlError(f"upstream CRD {url} is not valid YAML: {error}") from error
        crds = [
            d
            for d in documents
            if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"
        ]
        if not crds:
            raise MlopsctlError(f"{url} holds no CustomResourceDefinition")
        for crd in crds:
            spec = crd.get("spec", {})
            group, kind = spec.get("group", ""), spec.get("names", {}).get("kind", "")
            for version in spec.get("versions", []):
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if not schema:
                    continue
                path = destination / group / f"{kind.lower()}_{version['name']}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                scope = "Cluster" if spec.get("scope") == "Cluster" else "Namespaced"
                path.write_text(json.dumps({**strict(schema), "x-kubernetes-scope": scope}))
                written.append(f"{group}/{version['name']} {kind} from {url}")
    return written

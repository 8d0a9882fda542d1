"""CustomResourceDefinitions made from the project's own schemas (`schemas/<group>/<kind>_<version>
.json`), so that an API server validates the platform's custom resources as `validate` does.
Pure: schemas in, CRD objects out.

A CRD's schema must be structural (a type on every node, no `additionalProperties` beside
`properties`, no `const`, metadata left to the server), so each JSON Schema is translated:
`const` becomes a one-value `enum`; `["string", "integer"]` becomes `x-kubernetes-int-or-string`;
a nullable union keeps its other type with `nullable`; `additionalProperties: false` is dropped
(strict field validation refuses unknown fields instead); objects with neither properties nor
additionalProperties, and untyped nodes, keep unknown fields; `oneOf` is dropped (the local
schema check keeps enforcing it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_DROPPED = frozenset({"$schema", "$id", "x-kubernetes-scope", "oneOf", "anyOf", "allOf", "not"})


def plural(kind: str) -> str:
    lowered = kind.lower()
    if lowered.endswith(("s", "x", "ch", "sh")):
        return f"{lowered}es"
    if lowered.endswith("y") and lowered[-2:-1] not in "aeiou":
        return f"{lowered[:-1]}ies"
    return f"{lowered}s"


def structural(node: Any) -> Any:
    """A JSON Schema node as a structural OpenAPI v3 schema node."""
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "const":
            result["enum"] = [value]
        elif key == "properties":
            result["properties"] = {name: structural(child) for name, child in value.items()}
        elif key == "items":
            result["items"] = structural(value)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                result["additionalProperties"] = structural(value)
        else:
            result[key] = value
    types = result.pop("type", None)
    if isinstance(types, list):
        concrete = [kind for kind in types if kind != "null"]
        if "null" in types:
            result["nullable"] = True
        if sorted(concrete) == ["integer", "string"]:
            result["x-kubernetes-int-or-string"] = True
            types = None
        else:
            types = concrete[0] if len(concrete) == 1 else None
    if types is None and "x-kubernetes-int-or-string" not in result:
        types = _type_of_values(result.get("enum", []))
    if types is None:
        if "x-kubernetes-int-or-string" not in result:
            result["x-kubernetes-preserve-unknown-fields"] = True
    else:
        result["type"] = types
    if types == "object" and "properties" not in result and "additionalProperties" not in result:
        result["x-kubernetes-preserve-unknown-fields"] = True
    if types == "array" and "items" not in result:
        result["items"] = {"x-kubernetes-preserve-unknown-fields": True}
    if "additionalProperties" in result and "properties" in result:
        del result["additionalProperties"]
    return result


def _type_of_values(values: list[Any]) -> str | None:
    kinds = {type(value) for value in values}
    if kinds == {str}:
        return "string"
    if kinds == {bool}:
        return "boolean"
    if kinds and kinds <= {int}:
        return "integer"
    return None


def crd(schema: dict[str, Any], group: str, version: str) -> dict[str, Any]:
    """The CRD serving `schema` (a project schema of `group`/`version`)."""
    kind = schema["properties"]["kind"]["const"]
    properties = {
        name: structural(child)
        for name, child in schema.get("properties", {}).items()
        if name not in ("apiVersion", "kind", "metadata")
    }
    # The controller's own field (Argo CD's sync and health, the operator's conditions): the
    # project's schemas describe manifests, which never carry it.
    properties.setdefault(
        "status", {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    )
    names = {"kind": kind, "plural": plural(kind), "singular": kind.lower()}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{names['plural']}.{group}"},
        "spec": {
            "group": group,
            "names": names,
            "scope": schema.get("x-kubernetes-scope", "Namespaced"),
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                **properties,
                            },
                            **(
                                {"required": [r for r in schema["required"] if r != "metadata"]}
                                if schema.get("required")
                                else {}
                            ),
                        }
                    },
                }
            ],
        },
    }


def project_crds(schema_dir: Path) -> list[dict[str, Any]]:
    """One CRD per schema file under `schema_dir` (`<group>/<kind>_<version>.json`)."""
    found = []
    for path in sorted(schema_dir.glob("*/*.json")):
        _kind, _, version = path.stem.rpartition("_")
        found.append(crd(json.loads(path.read_text()), path.parent.name, version))
    return found

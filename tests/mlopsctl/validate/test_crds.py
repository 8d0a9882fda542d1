"""mlopsctl.validate.crds: CustomResourceDefinitions made from the project's JSON schemas, so that
an API server (`validate --server`, bootstrap's Argo CD stand-in) holds the platform's custom
resources to the rules `validate` holds them to. Each translation rule is checked by what a real
kube-apiserver (tests/support/kube_apiserver.py, one per module) then accepts and refuses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mlopsctl.base.kubeapi import KubeApi
from mlopsctl.validate.crds import crd, plural, project_crds
from mlopsctl.validate.schemas.store import PROJECT_SCHEMA_DIR
from tests.support.kube_apiserver import TestApiServer

GROUP = "crds.example.test"
# A project schema as the ones in scripts/mlopsctl/validate/schemas are written: JSON Schema
# 2020-12, strict, with each construct `crd` has a rule for.
GIZMO_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "gizmo",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": f"{GROUP}/v1"},
        "kind": {"const": "Gizmo"},
        "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["mode"],
            "properties": {
                "mode": {"const": "fast"},
                "level": {"enum": [1, 2, 3]},
                "port": {"type": ["string", "integer"]},
                "note": {"type": ["string", "null"]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "extra": {"type": "object"},
                "anything": {},
                "tags": {"type": "array"},
                "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            },
        },
    },
}


@pytest.fixture(scope="module")
def gizmos(api_server: TestApiServer) -> Iterator[KubeApi]:
    """The module's API server serving Gizmo from the CRD `crd` made of GIZMO_SCHEMA."""
    kube = KubeApi(api_server.kubeconfig)
    refusal = kube.apply(crd(GIZMO_SCHEMA, GROUP, "v1"), "", dry_run=False)
    assert refusal is None, refusal  # the server takes it as a structural schema
    served(kube, [(f"{GROUP}/v1", "Gizmo")])
    yield kube
    kube.close()


def served(kube: KubeApi, kinds: list[tuple[str, str]]) -> None:
    deadline = time.monotonic() + 60
    while True:
        kube.forget_discovery()
        missing = [kind for kind in kinds if kind not in kube.resources()]
        if not missing:
            return
        assert time.monotonic() < deadline, f"never served: {missing}"
        time.sleep(0.1)


def gizmo(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gizmo",
        "metadata": {"name": name},
        "spec": {"mode": "fast", **spec},
    }


def refused_fields(kube: KubeApi, body: dict[str, Any]) -> list[str]:
    """The fields the server names in refusing `body` (a dry run); [] when it accepts it."""
    refusal = kube.apply(body, "default", dry_run=True)
    if refusal is None:
        return []
    return [field for field, _message in refusal.causes] or [refusal.message]


def test_what_the_schema_allows_the_server_accepts_and_keeps(gizmos: KubeApi):
    body = gizmo(
        "everything",
        level=2,
        port="http",
        note=None,
        labels={"team": "ml"},
        extra={"deep": {"field": [1, "two"]}},
        anything=["a", {"b": 3}],
        tags=[1, "x", {"y": True}],
        either=7,
    )
    assert gizmos.apply(body, "default", dry_run=False) is None
    assert refused_fields(gizmos, gizmo("numbered", port=8080, either="seven")) == []

    _status, stored = gizmos.request(
        "GET", f"/apis/{GROUP}/v1/namespaces/default/gizmos/everything"
    )
    # Where the schema leaves a field open, the server keeps what was written, whole.
    assert stored["spec"]["extra"] == {"deep": {"field": [1, "two"]}}
    assert stored["spec"]["anything"] == ["a", {"b": 3}]
    assert stored["spec"]["tags"] == [1, "x", {"y": True}]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"mode": "slow"}, "spec.mode"),  # const: a one-value enum
        ({"level": 7}, "spec.level"),  # enum of integers: typed integer
        ({"level": "2"}, "spec.level"),
        ({"labels": {"team": 1}}, "spec.labels.team"),  # additionalProperties' schema kept
        ({"note": 3}, "spec.note"),  # nullable keeps the other type
        ({"port": 1.5}, "spec.port"),  # int-or-string is neither a number nor an object
        ({"colour": "red"}, "spec.colour"),  # additionalProperties: false, strict validation
    ],
)
def test_what_the_schema_refuses_the_server_refuses_naming_the_field(
    gizmos: KubeApi, spec: dict[str, Any], field: str
):
    fields = refused_fields(gizmos, gizmo("refused", **spec))
    assert fields and all(field in named for named in fields), fields


def test_a_missing_required_field_is_refused(gizmos: KubeApi):
    body = gizmo("incomplete")
    del body["spec"]["mode"]
    assert any("spec.mode" in named for named in refused_fields(gizmos, body))


def test_a_controller_can_write_status_which_no_manifest_carries(gizmos: KubeApi):
    assert gizmos.apply(gizmo("watched"), "default", dry_run=False) is None
    path = f"/apis/{GROUP}/v1/namespaces/default/gizmos/watched/status"
    status, answer = gizmos.request(
        "PATCH", path, b'{"status": {"phase": "Ready", "seen": 3}}', "application/merge-patch+json"
    )
    assert status == 200, answer
    assert answer["status"] == {"phase": "Ready", "seen": 3}


def test_each_project_schema_is_served_at_its_scope_under_its_operators_plural(
    api_server: TestApiServer,
):
    schemas = sorted(PROJECT_SCHEMA_DIR.glob("*/*.json"))
    declared = {}  # (apiVersion, kind) -> namespaced, as each schema's x-kubernetes-scope says
    for path in schemas:
        schema = json.loads(path.read_text())
        key = (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"])
        declared[key] = schema.get("x-kubernetes-scope", "Namespaced") == "Namespaced"
    kube = KubeApi(api_server.kubeconfig)
    try:
        definitions = project_crds(PROJECT_SCHEMA_DIR)
        assert len(definitions) == len(schemas)  # one per schema file
        for definition in definitions:
            assert kube.apply(definition, "", dry_run=False) is None, definition["metadata"]
        served(kube, list(declared))
        found = kube.resources()
    finally:
        kube.close()
    assert {key: found[key].namespaced for key in declared} == declared
    assert not declared[("external-secrets.io/v1", "ClusterSecretStore")]
    # The plurals the operators' own CRDs serve these kinds under, which RBAC rules name (the
    # promoter's Role grants `applications`).
    assert sorted(found[key].plural for key in declared) == [
        "applications",
        "appprojects",
        "clusters",
        "clustersecretstores",
        "externalsecrets",
        "podmonitors",
        "prometheusrules",
        "servicemonitors",
    ]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("ServiceMonitor", "servicemonitors"),
        ("Prometheus", "prometheuses"),  # prometheus-operator's
        ("Ingress", "ingresses"),
        ("NetworkPolicy", "networkpolicies"),
        ("Gateway", "gateways"),  # a vowel before the y
        ("Box", "boxes"),
        ("Batch", "batches"),
        ("Mesh", "meshes"),
    ],
)
def test_plurals_are_the_english_ones_kubernetes_and_operators_use(kind: str, expected: str):
    assert plural(kind) == expected

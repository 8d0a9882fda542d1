"""Rendered resources: kustomize's output read back as objects, each named the way kubectl names
it, and the kinds that live outside namespaces as the API server serves them."""

from __future__ import annotations

from pathlib import Path

from mlopsctl.base import kustomize, toolchain
from mlopsctl.base.kubeapi import KubeApi
from mlopsctl.base.resources import (
    BUILTIN_CLUSTER_SCOPED_KINDS,
    Resource,
    field_path,
    parse_render,
    walk,
)
from tests.support.kube_apiserver import TestApiServer
from tests.support.paths import TOOLS_DIR
from tests.support.trees import MINIMAL_CONFIG, write_tree

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app.kubernetes.io/name: web
  annotations:
    example.test/owner: shop
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: web
  template:
    metadata:
      labels:
        app.kubernetes.io/name: web
    spec:
      containers:
        - name: web
          image: registry.example.test/web:1.2.3
"""
CLUSTER_ROLE = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: reader
rules: []
"""


def test_a_real_render_reads_back_as_named_objects(tmp_path: Path):
    repository = write_tree(
        tmp_path,
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "shop/kustomization.yaml": (
                "namespace: shop\nresources:\n  - deployment.yaml\n  - cluster-role.yaml\n"
                "configMapGenerator:\n  - name: settings\n    literals:\n      - colour=blue\n"
            ),
            "shop/deployment.yaml": DEPLOYMENT,
            "shop/cluster-role.yaml": CLUSTER_ROLE,
        },
    )
    result = kustomize.render_root(repository, "shop", toolchain.resolve(TOOLS_DIR), False)
    assert result.error is None, result.error
    resources = parse_render("shop", result.output)
    assert all(resource.root == "shop" for resource in resources)
    by_kind = {resource.kind: resource for resource in resources}
    assert set(by_kind) == {"ClusterRole", "ConfigMap", "Deployment"}
    deployment = by_kind["Deployment"]
    assert deployment.reference == "Deployment/shop/web"
    assert (deployment.api_version, deployment.group) == ("apps/v1", "apps")
    assert deployment.labels == {"app.kubernetes.io/name": "web"}
    assert deployment.annotations == {"example.test/owner": "shop"}
    # Kustomize leaves the cluster-scoped object out of the namespace; so does its reference.
    assert by_kind["ClusterRole"].reference == "ClusterRole/reader"
    assert by_kind["ClusterRole"].group == "rbac.authorization.k8s.io"
    # The generated name carries kustomize's content hash; the core group is "".
    config_map = by_kind["ConfigMap"]
    assert config_map.name.startswith("settings-") and len(config_map.name) == len("settings-") + 10
    assert (config_map.group, config_map.reference) == ("", f"ConfigMap/shop/{config_map.name}")


def test_documents_that_are_not_objects_are_left_out():
    text = "---\n# only a comment\n---\n- a list\n---\nplain text\n---\nkind: ConfigMap\n"
    assert parse_render("root", text) == [Resource("root", {"kind": "ConfigMap"})]
    assert parse_render("root", "") == []


def test_metadata_of_the_wrong_shape_reads_as_empty_not_as_an_error():
    odd = Resource("root", {"kind": "Thing", "metadata": ["not", "a", "mapping"]})
    assert (odd.name, odd.namespace, odd.labels, odd.annotations) == ("", "", {}, {})
    assert odd.reference == "Thing/"
    labels_as_text = Resource("root", {"metadata": {"name": "x", "labels": "a=b"}})
    assert labels_as_text.labels == {}
    assert Resource("root", {}).api_version == ""


def test_field_paths_are_written_as_kubectl_writes_them():
    body = {"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80}]}]}}
    paths = dict(walk(body))
    assert paths["spec.containers[0].name"] == "web"
    assert paths["spec.containers[0].ports[0].containerPort"] == 80
    assert paths[""] is body
    assert field_path(["spec", "containers", 0, "image"]) == "spec.containers[0].image"
    assert field_path([0, "name"]) == "[0].name"
    assert field_path([]) == ""


def test_every_kind_called_cluster_scoped_is_served_outside_namespaces(api_server: TestApiServer):
    """The list is what the Argo CD checks use to tell an AppProject's cluster whitelist from its
    namespace whitelist; the API server of the pinned Kubernetes is the authority on it."""
    client = KubeApi(api_server.kubeconfig)
    try:
        served = client.resources()
    finally:
        client.close()
    scopes: dict[str, set[bool]] = {}
    for (_api_version, kind), where in served.items():
        scopes.setdefault(kind, set()).add(where.namespaced)
    assert {kind: scopes.get(kind) for kind in BUILTIN_CLUSTER_SCOPED_KINDS} == {
        kind: {False} for kind in BUILTIN_CLUSTER_SCOPED_KINDS
    }


def applicable_kinds(kube: KubeApi) -> dict[str, bool]:
    """Kind -> whether it is namespaced, for every built-in kind the server serves that a
    manifest can hold: one server-side apply can make (verbs create and patch). Kinds of the
    groups CRDs add are left out: they are not built in."""
    _status, listing = kube.request(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    )
    custom = {item["spec"]["group"] for item in listing.get("items") or []}
    _status, groups = kube.request("GET", "/apis")
    versions = ["v1"] + [
        version["groupVersion"]
        for group in groups["groups"]
        if group["name"] not in custom
        for version in group["versions"]
    ]
    kinds: dict[str, bool] = {}
    for version in versions:
        _status, served = kube.request("GET", "/api/v1" if version == "v1" else f"/apis/{version}")
        for resource in served["resources"]:
            if "/" not in resource["name"] and {"create", "patch"} <= set(resource["verbs"]):
                kinds[resource["kind"]] = bool(resource["namespaced"])
    return kinds


def test_every_built_in_kind_applied_outside_namespaces_is_called_cluster_scoped(
    api_server: TestApiServer,
):
    """The converse: a kind the pinned Kubernetes serves cluster-wide that the list lacks would
    pass the Argo CD checks as namespaced (and need no cluster whitelist entry) until Argo CD
    refused to sync it. Review kinds (create only, never stored) and ComponentStatus (read
    only) are no manifest's."""
    client = KubeApi(api_server.kubeconfig)
    try:
        kinds = applicable_kinds(client)
    finally:
        client.close()
    assert "Deployment" in kinds and "Namespace" in kinds  # discovery was read
    assert {kind for kind, namespaced in kinds.items() if not namespaced} == set(
        BUILTIN_CLUSTER_SCOPED_KINDS
    )

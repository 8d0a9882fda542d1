"""mlopsctl.bootstrap.cluster: bootstrap's side of the cluster, called directly against a real
kube-apiserver and etcd (tests/support/kube_apiserver.py, one per module). The context chosen
from the kubeconfig, credentials the server refuses, namespaces and Secrets created once and
never rewritten, a render applied CRDs first and a second time without a change, a dry run that
judges what it can and makes nothing, and a watch that goes on while Argo CD's Applications
cannot be read yet. The whole command is tested in test_bootstrap.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlopsctl.base.config import HandMadeSecret
from mlopsctl.base.errors import KubeApiError
from mlopsctl.base.kubeapi import KubeApi
from mlopsctl.base.resources import Resource, parse_render
from mlopsctl.bootstrap.cluster import Cluster, chosen_context, connect, watch_applications
from mlopsctl.validate.crds import crd
from mlopsctl.validate.schemas.store import PROJECT_SCHEMA_DIR
from tests.support.cluster_writes import application, write_status
from tests.support.kube_apiserver import TestApiServer

APPLICATIONS = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications"


@pytest.fixture
def client(api_server: TestApiServer) -> Iterator[KubeApi]:
    kube = KubeApi(api_server.kubeconfig)
    yield kube
    kube.close()


def unique(prefix: str) -> str:
    """A name no other test on this module's API server uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def resource_version(kube: KubeApi, path: str) -> str:
    status, body = kube.request("GET", path)
    assert status == 200, body
    return str(body["metadata"]["resourceVersion"])


# -- the kubeconfig and the server --------------------------------------------------------------


def test_the_context_is_the_one_asked_for_else_the_current_one(tmp_path: Path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "contexts": [{"name": "kind-local"}, {"name": "kind-staging"}],
                "current-context": "kind-local",
            }
        )
    )
    assert chosen_context(kubeconfig, None) == "kind-local"
    assert chosen_context(kubeconfig, "kind-staging") == "kind-staging"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clusters: [", "the kubeconfig is not valid YAML"),
        ("- kind-local\n", "not a kubeconfig (no mapping at the top level)"),
        ("contexts: [{name: kind-local}]\n", "no current-context: pass --context"),
    ],
)
def test_a_kubeconfig_that_names_no_context_to_use_is_refused_naming_the_file(
    tmp_path: Path, text: str, message: str
):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(text)
    with pytest.raises(KubeApiError) as refused:
        chosen_context(kubeconfig, None)
    assert str(refused.value).startswith(f"{kubeconfig}: {message}")


def test_credentials_the_server_refuses_are_said_before_anything_is_done(
    api_server: TestApiServer, tmp_path: Path
):
    document = yaml.safe_load(api_server.kubeconfig.read_text())
    document["users"] = [{"name": "test", "user": {"token": "not-a-token-it-knows"}}]
    stranger = tmp_path / "stranger"
    stranger.write_text(yaml.safe_dump(document))

    with pytest.raises(KubeApiError) as refused:
        connect(stranger, "test")

    assert str(refused.value).startswith(
        f"{api_server.url} (context 'test'): the API server refuses these credentials: HTTP 401"
    )
    kube = connect(api_server.kubeconfig, "test")  # the server's own credentials do
    kube.close()


# -- what bootstrap creates ---------------------------------------------------------------------


def test_a_namespace_and_a_secret_are_created_once_and_never_rewritten(client: KubeApi):
    cluster = Cluster(client)
    namespace = unique("secrets")
    expected = HandMadeSecret(namespace, "promoter", (("git-token", "git-token"),))

    assert cluster.existing_namespaces([namespace, "default"]) == {"default"}
    assert cluster.existing_secrets([expected]) == set()
    assert cluster.create_namespace(namespace) is True
    assert cluster.create_namespace(namespace) is False  # made meanwhile: kept

    def secret(token: str) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "promoter", "namespace": namespace},
            "stringData": {"git-token": token},
        }

    assert cluster.create_secret(secret("the-first-token")) is True
    # A Secret that appeared between the look and the create (another bootstrap) is kept as it
    # is: its values may be in use already.
    assert cluster.create_secret(secret("another-token")) is False

    assert cluster.existing_namespaces([namespace]) == {namespace}
    assert cluster.existing_secrets([expected]) == {(namespace, "promoter")}
    _status, stored = client.request("GET", f"/api/v1/namespaces/{namespace}/secrets/promoter")
    assert stored["data"] == {"git-token": "dGhlLWZpcnN0LXRva2Vu"}  # base64 of the first


def test_a_render_is_applied_crds_first_and_a_second_time_changes_nothing(client: KubeApi):
    cluster = Cluster(client)
    namespace = unique("widgets")
    # The worst order a render can have: the custom resource before its namespace and its CRD.
    render = yaml.safe_dump_all(
        [
            {
                "apiVersion": "bootstrap.example.test/v1",
                "kind": "Widget",
                "metadata": {"name": "first", "namespace": namespace},
                "spec": {"size": 3},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": namespace},
                "data": {"colour": "blue"},
            },
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": "widgets.bootstrap.example.test"},
                "spec": {
                    "group": "bootstrap.example.test",
                    "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                    "scope": "Namespaced",
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {
                                        "spec": {
                                            "type": "object",
                                            "properties": {"size": {"type": "integer"}},
                                        }
                                    },
                                }
                            },
                        }
                    ],
                },
            },
        ]
    )
    resources = parse_render("clusters/qa", render)
    paths = [
        f"/apis/bootstrap.example.test/v1/namespaces/{namespace}/widgets/first",
        f"/api/v1/namespaces/{namespace}/configmaps/settings",
        f"/api/v1/namespaces/{namespace}",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.bootstrap.example.test",
    ]

    assert cluster.apply_render("clusters/qa", resources) == (1, 3)
    first = [resource_version(client, path) for path in paths]
    assert cluster.apply_render("clusters/qa", resources) == (1, 3)

    assert [resource_version(client, path) for path in paths] == first


def test_the_dry_run_judges_what_the_server_can_and_makes_nothing(client: KubeApi):
    cluster = Cluster(client)
    later = unique("not-yet")

    def config_map(name: str, namespace: str) -> Resource:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
        if namespace:
            body["metadata"]["namespace"] = namespace
        return Resource("clusters/qa", body)

    name = unique("settings")
    resources = [
        config_map(name, ""),  # in default, which exists
        config_map(name, later),  # in a namespace the render is still to make
        Resource(
            "clusters/qa",
            {"apiVersion": "gadgets.example.test/v1", "kind": "Gadget", "metadata": {"name": "g"}},
        ),  # of a kind whose CRD is not installed yet
    ]

    assert cluster.preflight("clusters/qa", resources) == 1
    assert client.request("GET", f"/api/v1/namespaces/default/configmaps/{name}")[0] == 404
    assert cluster.existing_namespaces([later]) == set()

    resources[0].body["data"] = {"count": 3}  # ConfigMap data holds strings only
    with pytest.raises(KubeApiError) as refused:
        cluster.preflight("clusters/qa", resources)
    assert f"clusters/qa: ConfigMap/{name}: the API server" in str(refused.value)
    assert "nothing was changed (dry run, before creating anything)" in str(refused.value)


# -- watching Argo CD ---------------------------------------------------------------------------


def test_the_watch_goes_on_while_the_applications_cannot_be_read_saying_so_once(
    api_server: TestApiServer, client: KubeApi
):
    """As when bootstrap starts watching before Argo CD's CRDs are served: the error is said
    once, not at every poll, and the watch ends when the Application is Synced and Healthy."""
    log: list[str] = []
    said_before_argo_cd: list[str] = []
    failure: list[BaseException] = []

    def argo_cd_arrives() -> None:
        kube = KubeApi(api_server.kubeconfig)
        try:
            time.sleep(1.0)  # about ten polls of the watch
            said_before_argo_cd.extend(log)
            schema = json.loads(
                (PROJECT_SCHEMA_DIR / "argoproj.io/application_v1alpha1.json").read_text()
            )
            for body in (
                crd(schema, "argoproj.io", "v1alpha1"),
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argocd"}},
            ):
                assert kube.apply(body, "", dry_run=False) is None
            deadline = time.monotonic() + 60
            while ("argoproj.io/v1alpha1", "Application") not in kube.resources():
                assert time.monotonic() < deadline, "the Application CRD was never served"
                time.sleep(0.1)
                kube.forget_discovery()
            assert kube.apply(application("qa", "web", "shop"), "argocd", dry_run=False) is None
            write_status(
                kube,
                f"{APPLICATIONS}/web-qa",
                {"status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}},
            )
        except BaseException as error:  # reported by the test, not lost in the thread
            failure.append(error)
        finally:
            kube.close()

    controller = threading.Thread(target=argo_cd_arrives, daemon=True)
    controller.start()
    done, states = watch_applications(Cluster(client), 60, log.append, poll_seconds=0.1)
    controller.join(timeout=30)

    assert failure == []
    assert done
    assert (states["web-qa"].sync_status, states["web-qa"].health) == ("Synced", "Healthy")
    [said] = said_before_argo_cd
    assert "cannot read the Applications: " in said and "HTTP 404" in said
    assert log[-1].endswith("web-qa  Synced, Healthy")

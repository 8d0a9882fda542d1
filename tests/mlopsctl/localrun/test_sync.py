"""Argo CD's stand-in syncing the local environment of this repository into a real kube-apiserver
(tests/support/kube_apiserver.py): what it applies, in which order, into which namespace, with
which hooks, what it prunes on a new commit, and what it does with a refusal.

The API server judges every apply for real: a namespaced object in a namespace that does not
exist yet, or a custom resource before the chart that brings its CRD, is refused. What the API
server cannot say, because no controller or kubelet runs behind it, is whether a workload is
healthy: `ApiServerTarget.health` reads an object as Healthy once the server has it, unless the
test holds it back.

The tests share one API server and one repository and build on each other, in order.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlopsctl.base import toolchain
from mlopsctl.base.config import load_config
from mlopsctl.base.errors import LocalRunError
from mlopsctl.base.kubeapi import KubeApi
from mlopsctl.localrun import sync as sync_module
from mlopsctl.localrun.cluster import Health
from mlopsctl.localrun.sync import Application, Sync
from mlopsctl.validate.crds import project_crds
from mlopsctl.validate.schemas.store import PROJECT_SCHEMA_DIR
from tests.support.kube_apiserver import TestApiServer
from tests.support.paths import PLATFORM_PATHS, REPOSITORY
from tests.support.platform_fixtures import commit_all, git
from tests.support.trees import write_tree

# What each chart brings that the platform's manifests use: its CRDs.
CHART_GROUPS = {
    "cloudnative-pg": "postgresql.cnpg.io",
    "kube-prometheus-stack": "monitoring.coreos.com",
    "external-secrets": "external-secrets.io",
}
PIN = "overlays/local/model-server/kustomization.yaml"
Key = tuple[str, str, str]


@dataclass
class ApiServerTarget:
    """What the sync applies to (the run's `Cluster` in a run), here the real API server; every
    apply and delete is recorded in order, with the Application it was for."""

    kube: KubeApi
    log: list[tuple[str, str, Key]] = field(default_factory=list)
    held: set[Key] = field(default_factory=set)

    def apply(self, body: dict[str, Any], application: str) -> None:
        metadata = body.get("metadata") or {}
        key = (str(body.get("kind")), str(metadata.get("namespace", "")), str(metadata["name"]))
        refusal = self.kube.apply(body, key[1], dry_run=False)
        if refusal is not None:
            raise LocalRunError(f"{key[0]}/{key[2]}: {refusal.message}")
        self.log.append(("apply", application, key))

    def delete(self, kind: str, namespace: str, name: str, wait: bool = False) -> None:
        path = self._path(kind, namespace, name)
        if path is not None:
            status, answer = self.kube.request("DELETE", path)
            assert status in (200, 202, 404), answer
        self.log.append(("delete", "", (kind, namespace, name)))

    def health(self, kind: str, namespace: str, name: str) -> tuple[Health, str]:
        path = self._path(kind, namespace, name)
        if path is None or self.kube.request("GET", path)[0] != 200:
            return "Missing", "not applied"
        if (kind, namespace, name) in self.held:
            return "Progressing", "held back by the test"
        return "Healthy", ""

    def ensure_namespace(self, name: str) -> None:
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, "")

    def exists(self, kind: str, namespace: str, name: str) -> bool:
        return self.health(kind, namespace, name)[0] != "Missing"

    def applied(self, application: str | None = None) -> list[Key]:
        return [
            key for action, app, key in self.log if action == "apply" and application in (None, app)
        ]

    def _path(self, kind: str, namespace: str, name: str) -> str | None:
        versions = [v for (v, k) in self.kube.resources() if k == kind]
        if not versions:
            return None
        body = {"apiVersion": versions[0], "kind": kind, "metadata": {"name": name}}
        return self.kube.path_of(body, namespace)


def install_chart(target: ApiServerTarget, chart: str) -> None:
    """The chart stand-in: its CRDs, served before the sync goes on."""
    definitions = [
        crd
        for crd in project_crds(PROJECT_SCHEMA_DIR)
        if crd["spec"]["group"] == CHART_GROUPS[chart]
    ]
    for definition in definitions:
        assert target.kube.apply(definition, "", dry_run=False) is None
    deadline = time.monotonic() + 60
    for definition in definitions:
        kind = definition["spec"]["names"]["kind"]
        while True:
            target.kube.forget_discovery()
            if any(k == kind for (_, k) in target.kube.resources()):
                break
            assert time.monotonic() < deadline, f"{kind} never served"
            time.sleep(0.2)


@dataclass
class Synced:
    sync: Sync
    target: ApiServerTarget
    checkout: Path
    remote: Path

    def commit(self, change: dict[str, str], message: str) -> str:
        write_tree(self.checkout, change)
        commit_all(self.checkout, message)
        git(self.checkout, "push", "--quiet", "origin", "HEAD:main")
        return git(self.remote, "rev-parse", "main").strip()

    def app(self, name: str) -> Application:
        return self.sync.applications[name]


@pytest.fixture(scope="module")
def synced(api_server: TestApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    workspace = tmp_path_factory.mktemp("sync")
    checkout = workspace / "checkout"
    checkout.mkdir()
    for name in PLATFORM_PATHS:
        subprocess.run(["cp", "-a", str(REPOSITORY / name), str(checkout)], check=True)
    git(checkout, "init", "--quiet", "--initial-branch=main")
    commit_all(checkout, "the platform")
    remote = workspace / "remote.git"
    git(workspace, "clone", "--quiet", "--bare", str(checkout), str(remote))
    git(checkout, "remote", "add", "origin", str(remote))
    kube = KubeApi(api_server.kubeconfig)
    target = ApiServerTarget(kube)
    config = load_config(checkout)
    lines: list[str] = []
    sync = Sync(
        target,  # type: ignore[arg-type]  # the API server, where a run has its Cluster
        config,
        "local",
        remote,
        workspace / "sync",
        toolchain.resolve(toolchain.default_tools_dir(REPOSITORY)),
        {chart: lambda app, _checkout, c=chart: install_chart(target, c) for chart in CHART_GROUPS},
        lines.append,
        poll_seconds=0.2,
        wave_timeout_seconds=60,
    )
    try:
        yield Synced(sync, target, checkout, remote)
    finally:
        sync.stop()
        kube.close()
        print("\n".join(lines))


def wait_until_synced(synced: Synced, revision: str) -> None:
    deadline = time.monotonic() + 120
    while synced.sync.revision != revision:
        assert time.monotonic() < deadline, synced.sync.error
        time.sleep(0.1)


def wave_of(synced: Synced, application: str) -> int:
    return synced.app(application).wave


def test_waves_are_applied_in_order_each_after_the_one_before_is_healthy(synced: Synced):
    target, sync = synced.target, synced.sync
    tracking = ("Deployment", "ml-platform", "mlflow-tracking")
    target.held.add(tracking)
    head = sync.head()
    sync.start()  # follows main from now on, as Argo CD does
    try:
        deadline = time.monotonic() + 120
        while tracking not in target.applied():
            assert time.monotonic() < deadline, (sync.error, target.log[-5:])
            time.sleep(0.1)
        time.sleep(1.0)  # the sync polls health every 0.5 s: two chances to go on, were it to
        # Wave 0 is not healthy: nothing of wave 1 is applied.
        assert synced.app("mlflow-tracking-local").health == "Progressing"
        assert not target.exists("Deployment", "ml-platform", "model-server")
    finally:
        target.held.clear()
    wait_until_synced(synced, head)
    assert {app.name: (app.sync_status, app.health) for app in sync.applications.values()} == {
        name: ("Synced", "Healthy") for name in sync.applications
    }
    # Applications applied wave by wave, in the waves apps/local gives them.
    waves = [wave_of(synced, app) for action, app, _ in target.log if action == "apply" and app]
    assert waves == sorted(waves)
    assert len(set(waves)) >= 5
    # Everything each Application renders is in the API server, in its destination namespace.
    for app in sync.applications.values():
        if app.path is None:
            continue
        assert app.applied, app.name
        for kind, namespace, name in app.applied:
            assert namespace == ("" if kind == "Namespace" else app.destination_namespace)
            assert target.exists(kind, namespace, name), (app.name, kind, name)


def test_hooks_run_around_their_applications_resources(synced: Synced):
    tracking = synced.target.applied("mlflow-tracking-local")
    kinds = [kind for kind, _, _ in tracking]
    # The PreSync migration Job before the tracking server's resources.
    assert tracking[0] == ("Job", "ml-platform", "mlflow-db-upgrade")
    assert "Deployment" in kinds[1:]
    # The PostSync Job once the promoter is healthy, after everything else of it.
    promoter = synced.target.applied("promoter-local")
    assert promoter[-1] == ("Job", "ml-platform", "promoter-register-webhook")
    assert ("Deployment", "ml-platform", "promoter") in promoter[:-1]
    # Within an Application, Argo CD's kind order: ConfigMaps and Secrets before workloads.
    order = sync_module.KIND_ORDER
    for application in ("mlflow-tracking-local", "model-server-local", "promoter-local"):
        normal = [
            kind
            for kind, _, name in synced.target.applied(application)
            if not name.endswith(("db-upgrade", "register-webhook"))
        ]
        ranks = [order.index(kind) if kind in order else len(order) for kind in normal]
        assert ranks == sorted(ranks), (application, normal)


def pinned_config_maps(synced: Synced) -> set[str]:
    status, listing = synced.target.kube.request("GET", "/api/v1/namespaces/ml-platform/configmaps")
    assert status == 200
    return {
        item["metadata"]["name"]
        for item in listing["items"]
        if item["metadata"]["name"].startswith("model-server-pin")
    }


def test_a_new_commit_is_synced_and_what_left_git_is_pruned(synced: Synced):
    before = pinned_config_maps(synced)
    assert len(before) == 1
    applied_before = len(synced.target.log)
    text = (synced.checkout / PIN).read_text()
    assert "models:/iris-classifier/0" in text
    revision = synced.commit(
        {PIN: text.replace("models:/iris-classifier/0", "models:/iris-classifier/3")},
        "pin v3",
    )
    wait_until_synced(synced, revision)
    after = pinned_config_maps(synced)
    assert len(after) == 1 and after != before  # the new pin's ConfigMap, the old one pruned
    changed = synced.target.log[applied_before:]
    # Only the Application whose render changed is applied again.
    assert {app for action, app, _ in changed if action == "apply"} - {""} == {"model-server-local"}
    assert ("delete", "", ("ConfigMap", "ml-platform", before.pop())) in changed
    deployment = synced.target.kube.request(
        "GET", "/apis/apps/v1/namespaces/ml-platform/deployments/model-server"
    )[1]
    assert after.pop() in str(deployment["spec"]["template"])


def test_a_resource_the_api_server_refuses_fails_its_application_naming_it(synced: Synced):
    path = "base/streamlit/deployment.yaml"
    text = (synced.checkout / path).read_text()
    assert "replicas: 1" in text
    revision = synced.commit({path: text.replace("replicas: 1", "replicas: -1")}, "bad replicas")
    deadline = time.monotonic() + 120
    while synced.sync.attempted != revision or "did not become healthy" not in synced.sync.error:
        assert time.monotonic() < deadline, synced.sync.error
        time.sleep(0.1)
    app = synced.app("streamlit-local")
    assert app.health == "Degraded"
    assert "Deployment/streamlit" in app.message and "spec.replicas" in app.message
    # The last revision that synced stays the synced one.
    assert synced.sync.revision != revision
    assert synced.sync.error.startswith("wave 2 did not become healthy: streamlit-local: ")

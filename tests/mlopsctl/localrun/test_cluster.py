"""The controllers of the run, on a node of the test's own (tests/support/local_node.py):
Deployments make and replace pods (rolling update and Recreate), Jobs retry up to their back-off
limit and deadline, Services get addresses that reach their ready pods by name from every pod,
NetworkPolicies follow the pods that come and go, and health reads as Argo CD reads it."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.localrun import cluster as cluster_module
from mlopsctl.localrun.cluster import Cluster
from mlopsctl.localrun.kubelet import Pod
from mlopsctl.localrun.model import ObjectReference
from mlopsctl.localrun.network import NETNS_DIRECTORY, connect_inside
from tests.support.local_node import IMAGE, deployment, node, server, wait_for

pytestmark = pytest.mark.usefixtures("as_root")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with node(tmp_path) as made:
        made.start()
        yield made


def service(name: str, namespace: str = "apps", **spec: Any) -> dict[str, Any]:
    spec.setdefault("selector", {"app": name})
    spec.setdefault("ports", [{"name": "http", "port": 80, "targetPort": "http"}])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def pods_of(cluster: Cluster, name: str) -> list[Pod]:
    return [
        pod for pod in list(cluster.pods.values()) if pod.owner.name == name and not pod.deleting
    ]


def ask(
    address: str,
    path: str = "/report",
    port: int = 80,
    inside: Pod | None = None,
    timeout: float = 10,
) -> Any:
    """GET `path` from the host, or from inside a pod; the JSON answer."""
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    if inside is not None:
        assert inside.endpoint is not None
        connection.sock = connect_inside(inside.endpoint.namespace_path, (address, port), timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, response.status
        return json.loads(response.read())
    finally:
        connection.close()


def test_a_service_reaches_its_ready_pods_by_address_and_by_name(cluster: Cluster):
    cluster.apply(service("web"), "test")
    body = deployment("web", [server()])
    body["spec"]["replicas"] = 2
    cluster.apply(body, "test")
    assert cluster.health("Deployment", "apps", "web")[0] == "Progressing"
    wait_for(
        lambda: cluster.health("Deployment", "apps", "web") == ("Healthy", "2/2 ready"),
        "both replicas to be ready",
    )
    _, address = cluster.services[("apps", "web")]
    # From the node and from a pod, the Service spreads connections over both replicas.
    replicas = {pod.name for pod in pods_of(cluster, "web")}
    assert len(replicas) == 2
    # (Once the Service's rules have the second pod: they follow readiness, as kube-proxy's do.)
    wait_for(lambda: {ask(address)["answered_by"] for _ in range(6)} == replicas, "both to answer")
    cluster.apply(deployment("client", [server()]), "test")
    [client] = wait_for(
        lambda: [pod for pod in pods_of(cluster, "client") if pod.ready], "the client pod"
    )
    assert {ask(address, inside=client)["answered_by"] for _ in range(6)} == replicas
    # The client's hosts file names the Service as cluster DNS would, and its environment has
    # the Service's variables (it started after the Service).
    seen = ask(client.ip, port=8080)
    assert f"{address}\tweb web.apps web.apps.svc web.apps.svc.cluster.local" in seen["hosts"]
    assert seen["env"]["WEB_SERVICE_HOST"] == address
    assert seen["env"]["WEB_SERVICE_PORT"] == "80"
    # Another namespace's pods know it by its qualified names only.
    other = cluster.hosts_file("elsewhere", "x", "10.0.0.1").splitlines()
    assert f"{address}\tweb.apps web.apps.svc web.apps.svc.cluster.local" in other
    # A port-forward goes to a ready pod of the Service; a Service without a selector has none.
    picked = cluster.ready_pod_namespace("apps", "web")
    assert picked in {
        pod.endpoint.namespace_path for pod in pods_of(cluster, "web") if pod.endpoint
    }
    cluster.apply(service("external", selector={}), "test")
    assert cluster.ready_pod_namespace("apps", "external") is None


def test_a_rolling_update_keeps_a_ready_pod_until_the_new_one_serves(cluster: Cluster):
    cluster.apply(service("web"), "test")
    cluster.apply(deployment("web", [server()]), "test")
    wait_for(lambda: cluster.health("Deployment", "apps", "web")[0] == "Healthy", "web")
    _, address = cluster.services[("apps", "web")]
    [old] = pods_of(cluster, "web")
    ready: list[set[str]] = [{old.name}]  # the ready pods, each time they change
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            now = {pod.name for pod in pods_of(cluster, "web") if pod.ready}
            if now != ready[-1]:
                ready.append(now)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        cluster.apply(deployment("web", [server(env=[{"name": "VERSION", "value": "2"}])]), "t")
        assert cluster.health("Deployment", "apps", "web")[0] == "Progressing"
        wait_for(lambda: old.name not in cluster.pods, "the old pod to be gone")
    finally:
        stop.set()
        watcher.join(timeout=15)
    # maxSurge 1, maxUnavailable 0: the old pod served until the new one was ready, and there
    # was never a moment without a ready pod.
    [new] = pods_of(cluster, "web")
    assert ready[-1] == {new.name}
    assert set() not in ready, ready
    [new] = pods_of(cluster, "web")
    assert new.name != old.name
    assert cluster.health("Deployment", "apps", "web") == ("Healthy", "1/1 ready")
    assert ask(address)["env"]["VERSION"] == "2"


def test_recreate_stops_every_old_pod_before_the_new_one_starts(cluster: Cluster):
    body = deployment("db", [server()])
    body["spec"]["strategy"] = {"type": "Recreate"}
    cluster.apply(body, "test")
    wait_for(lambda: cluster.health("Deployment", "apps", "db")[0] == "Healthy", "db")
    [old] = pods_of(cluster, "db")
    overlaps: list[set[str]] = []

    def watch() -> None:
        while old.name in cluster.pods:
            alive = {pod.name for pod in list(cluster.pods.values()) if pod.owner.name == "db"}
            if len(alive) > 1:
                overlaps.append(alive)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    changed = deployment("db", [server(env=[{"name": "VERSION", "value": "2"}])])
    changed["spec"]["strategy"] = {"type": "Recreate"}
    cluster.apply(changed, "test")
    wait_for(lambda: cluster.health("Deployment", "apps", "db")[0] == "Healthy", "db again", 30)
    watcher.join(timeout=5)
    assert overlaps == []
    assert [pod.name for pod in pods_of(cluster, "db")] != [old.name]


def test_a_job_is_retried_up_to_its_back_off_limit(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(cluster_module, "JOB_BACKOFF_SECONDS", 0.1)
    failing = {"name": "task", "image": IMAGE, "command": ["/bin/sh", "-c", "exit 4"]}
    job = deployment("migrate", [failing], kind="Job", restartPolicy="Never")
    job["spec"]["backoffLimit"] = 1
    cluster.apply(job, "test")
    health = wait_for(
        lambda: (h := cluster.health("Job", "apps", "migrate"))[0] == "Degraded" and h,
        "the Job to fail",
    )
    assert health[1].startswith("BackoffLimitExceeded: pod migrate-")
    assert "failed (task: Error" in health[1]
    assert len(cluster.jobs[("apps", "migrate")].pods) == 2  # the first try and one retry
    # A Job that succeeds is Healthy; its template cannot change afterwards.
    done = deployment(
        "seed",
        [{"name": "task", "image": IMAGE, "command": ["true"]}],
        kind="Job",
        restartPolicy="Never",
    )
    cluster.apply(done, "test")
    wait_for(lambda: cluster.health("Job", "apps", "seed") == ("Healthy", "complete"), "seed")
    with pytest.raises(UnsupportedManifest, match="a Job's template cannot change"):
        cluster.apply(done, "test")


def test_a_job_over_its_deadline_fails_and_its_pod_is_stopped(cluster: Cluster):
    # A server that never ends by itself (and ends at once on SIGTERM).
    # A grace period of a second: under load a SIGTERM can land before the server is up to
    # end on it, and the default 30 s would outlast the wait below.
    job = deployment(
        "slow", [server()], kind="Job", restartPolicy="Never", terminationGracePeriodSeconds=1
    )
    job["spec"]["activeDeadlineSeconds"] = 0.5  # the run takes fractions; a manifest, seconds
    cluster.apply(job, "test")
    [pod] = wait_for(lambda: pods_of(cluster, "slow"), "the Job's pod")
    wait_for(lambda: cluster.health("Job", "apps", "slow")[0] == "Degraded", "the deadline", 20)
    assert cluster.health("Job", "apps", "slow")[1].startswith("DeadlineExceeded")
    wait_for(lambda: pod.name not in cluster.pods, "the Job's pod to be stopped", 20)
    assert cluster.jobs[("apps", "slow")].pods == [pod]  # and not replaced


def test_a_deleted_deployment_leaves_no_pod_and_its_service_no_address(cluster: Cluster):
    cluster.apply(service("web"), "test")
    cluster.apply(deployment("web", [server()]), "test")
    wait_for(lambda: cluster.health("Deployment", "apps", "web")[0] == "Healthy", "web")
    [pod] = pods_of(cluster, "web")
    assert pod.endpoint is not None
    namespace = pod.endpoint.namespace
    _, address = cluster.services[("apps", "web")]
    cluster.delete("Deployment", "apps", "web", wait=True)
    assert cluster.health("Deployment", "apps", "web") == ("Missing", "not applied")
    assert namespace not in {path.name for path in NETNS_DIRECTORY.iterdir()}
    # No ready backend any more: refused at once, as kube-proxy refuses it.
    wait_for(lambda: refused(address), "the Service to refuse")
    cluster.delete("Service", "apps", "web")
    assert ("apps", "web") not in cluster.services


def refused(address: str) -> bool:
    try:
        ask(address)
    except ConnectionRefusedError:
        return True
    return False


def test_network_policies_follow_the_pods_that_come_and_go(cluster: Cluster):
    cluster.apply(service("web"), "test")
    cluster.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
            },
        },
        "test",
    )
    for name in ("web", "client", "stranger"):
        cluster.apply(deployment(name, [server()]), "test")
    for name in ("web", "client", "stranger"):
        wait_for(lambda n=name: cluster.health("Deployment", "apps", n)[0] == "Healthy", name)
    _, address = cluster.services[("apps", "web")]
    [client], [stranger] = pods_of(cluster, "client"), pods_of(cluster, "stranger")
    assert ask(address, inside=client)["answered_by"].startswith("web-")
    with pytest.raises(TimeoutError):  # dropped, as a NetworkPolicy drops
        ask(address, inside=stranger, timeout=0.5)
    # A new web pod (a new template) is covered as soon as it exists.
    cluster.apply(deployment("web", [server(env=[{"name": "VERSION", "value": "2"}])]), "t")
    wait_for(
        lambda: (
            all(
                p.owner_hash == cluster.deployments[("apps", "web")].template_hash
                for p in pods_of(cluster, "web")
            )
            and cluster.health("Deployment", "apps", "web")[0] == "Healthy"
        ),
        "the new web pod",
    )
    assert ask(address, inside=client)["env"]["VERSION"] == "2"
    with pytest.raises(TimeoutError):
        ask(address, inside=stranger, timeout=0.5)


def test_what_the_cluster_cannot_honour_is_refused_naming_it(cluster: Cluster):
    with pytest.raises(UnsupportedManifest) as refused_kind:
        cluster.apply(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": "web", "namespace": "apps"},
            },
            "test",
        )
    assert str(refused_kind.value) == (
        "Ingress/apps/web: kind: networking.k8s.io/v1 Ingress is not supported by the local run"
    )
    with pytest.raises(LocalRunError, match='persistentvolumeclaim "data" not found'):
        cluster.claim_directory("apps", "data", ObjectReference("Deployment", "apps", "db"))
    # Secrets read as a container reads them: data decoded, stringData as it is.
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "apps"},
            "data": {"token": "czNjcjN0"},
            "stringData": {"user": "mlflow"},
        },
        "test",
    )
    assert cluster.config_data("Secret", "apps", "s") == {"token": "s3cr3t", "user": "mlflow"}
    assert cluster.config_data("Secret", "apps", "missing") is None

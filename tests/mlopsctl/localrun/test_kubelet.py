"""The kubelet's stand-in: a pod spec from a manifest becomes processes, run for real on a node of
the test's own (tests/support/local_node.py): env from ConfigMaps, Secrets and the downward API,
`$(VAR)` expansion, volumes, users, init containers, probes, restarts with back-off, Jobs' exits,
OOM kills, and termination with a grace period."""

from __future__ import annotations

import base64
import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlopsctl.localrun import kubelet, workloads
from mlopsctl.localrun.cluster import Cluster
from mlopsctl.localrun.kubelet import Pod
from mlopsctl.localrun.network import NETNS_DIRECTORY
from tests.support.local_node import (
    APP_UID,
    IMAGE,
    ROOT_IMAGE,
    config_map,
    deployment,
    from_yaml,
    node,
    server,
    wait_for,
)
from tests.support.processes import ended

pytestmark = pytest.mark.usefixtures("as_root")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with node(tmp_path) as made:
        yield made


@pytest.fixture
def quick_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restarts after 0.1 s instead of the kubelet's 10 s, doubling as the kubelet's do."""
    monkeypatch.setattr(kubelet, "BACKOFF_INITIAL_SECONDS", 0.1)


def start_pod(cluster: Cluster, body: dict[str, Any], name: str = "") -> Pod:
    """The pod a controller would make of the workload, started by the kubelet."""
    made = workloads.workload(body)
    pod = Pod(
        name or f"{made.reference.name}-0",
        made.reference.namespace,
        made.reference,
        made.template,
        cluster,
    )
    cluster.pods[pod.name] = pod  # stopped with the node
    pod.start()
    return pod


def get(pod: Pod, path: str, port: int = 8080) -> Any:
    with urllib.request.urlopen(f"http://{pod.ip}:{port}{path}", timeout=10) as answer:
        return json.loads(answer.read())


def secret(name: str, data: dict[str, str], namespace: str = "apps") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


POD = """
securityContext: {fsGroup: 2000}
initContainers:
  - name: prepare
    image: %(image)s
    command: [/bin/sh, -c, "echo prepared by $(HOSTNAME) as $(id -u) > /scratch/prepared"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
containers:
  - name: app
    image: %(image)s
    args: ["--port=$(PORT)", "$(GREETING), $(POD_NAME)", "$$(ESCAPED)", "$(UNDEFINED)"]
    env:
      - {name: PORT, value: "8080"}
      - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}
      - {name: PASSWORD, valueFrom: {secretKeyRef: {name: credentials, key: password}}}
      - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
      - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
      - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
      - {name: ADDRESS, value: "$(POD_NAME).$(NAMESPACE):$(PORT)"}
      - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    envFrom:
      - {prefix: CFG_, configMapRef: {name: flags}}
    ports: [{name: http, containerPort: 8080}]
    startupProbe: {tcpSocket: {port: http}, periodSeconds: 1, failureThreshold: 30}
    readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1}
    volumeMounts:
      - {name: config, mountPath: /etc/app}
      - {name: scratch, mountPath: /scratch}
volumes:
  - name: config
    configMap:
      name: settings
      items: [{key: app.conf, path: conf/app.conf, mode: 0444}]
  - {name: scratch, emptyDir: {}}
"""


def test_a_pod_runs_its_containers_as_the_manifest_says(cluster: Cluster):
    for body in (
        config_map("settings", {"greeting": "hello", "app.conf": "level = debug\n"}),
        config_map("flags", {"LEVEL": "debug"}),
        secret("credentials", {"password": "s3cr3t"}),
    ):
        cluster.apply(body, "test")
    spec = from_yaml(POD % {"image": IMAGE})
    pod = start_pod(cluster, deployment("web", spec.pop("containers"), **spec), "web-5d8c9-x7k2p")
    wait_for(lambda: pod.ready, "the pod to be ready")
    assert pod.init_containers["prepare"].state == "terminated"
    assert pod.init_containers["prepare"].reason == "Completed"
    seen = get(pod, "/report")
    # command and args: the image's ENTRYPOINT with the manifest's args, $(VAR) expanded as the
    # kubelet expands it ($$ escapes, an undefined name stays as written).
    assert seen["argv"] == ["--port=8080", "hello, web-5d8c9-x7k2p", "$(ESCAPED)", "$(UNDEFINED)"]
    env = seen["env"]
    assert {name: env.get(name) for name in env if name not in ("PATH", "LANG")} == {
        "FROM_IMAGE": "image env",
        "HOSTNAME": "web-5d8c9-x7k2p",
        "CFG_LEVEL": "debug",
        "PORT": "8080",
        "GREETING": "hello",
        "PASSWORD": "s3cr3t",  # the Secret's value, decoded
        "POD_NAME": "web-5d8c9-x7k2p",
        "POD_IP": pod.ip,
        "TIER": "web",
        # Only variables defined before expand: NAMESPACE comes after ADDRESS.
        "ADDRESS": "web-5d8c9-x7k2p.$(NAMESPACE):8080",
        "NAMESPACE": "apps",
    }
    # The image's user (by name, from its passwd), its workdir, and fsGroup as a group.
    assert seen["ids"] == [APP_UID, APP_UID, sorted([APP_UID, 2000])]
    assert seen["cwd"] == "/app"
    assert seen["hostname"] == "web-5d8c9-x7k2p"
    assert f"{pod.ip}\tweb-5d8c9-x7k2p" in seen["hosts"].splitlines()
    assert seen["files"] == {
        "/etc/app/conf/app.conf": ["level = debug\n", "0o444"],
        "/scratch/prepared": [f"prepared by web-5d8c9-x7k2p as {APP_UID}\n", "0o644"],
    }
    assert pod.summary() == "Running"
    assert pod.containers["app"].start_up_seconds is not None


def test_a_container_that_keeps_failing_is_restarted_with_back_off(
    cluster: Cluster, quick_back_off: None
):
    failing = {"name": "app", "image": IMAGE, "command": ["/bin/sh", "-c", "echo try; exit 3"]}
    pod = start_pod(cluster, deployment("crash", [failing]))
    state = pod.containers["app"]
    wait_for(lambda: state.restarts >= 2, "two restarts")
    assert state.last_termination == "Error (exit code 3)"
    # Between attempts the pod shows why, as `kubectl get pods` does.
    wait_for(lambda: pod.summary() == "CrashLoopBackOff", "the pod to show its back-off")
    assert state.message.startswith("back-off") and not pod.ready
    assert pod.phase == "Running"  # restartPolicy Always: never done
    assert pod.log_tail("app", 50).count("try") >= 2


def test_a_failing_liveness_probe_restarts_the_container(cluster: Cluster, quick_back_off: None):
    # A liveness exec probe needs /tmp/alive, which the container removes after half a second.
    script = (
        "touch /tmp/alive; (sleep 0.5; rm /tmp/alive) & "
        "exec python3 /app/server.py --port=8080 >/dev/null"
    )
    container = server(
        command=["/bin/sh", "-c", script],
        livenessProbe={
            "exec": {"command": ["cat", "/tmp/alive"]},
            "periodSeconds": 0.5,
            "failureThreshold": 1,
            # An exec probe starts a process in the container: ample time on a busy machine.
            "timeoutSeconds": 10,
        },
    )
    del container["args"]
    pod = start_pod(cluster, deployment("probed", [container], terminationGracePeriodSeconds=1))
    state = pod.containers["app"]
    wait_for(lambda: state.ready, "the container to be ready")
    wait_for(lambda: state.restarts >= 1, "the container to be restarted for liveness", 30)
    assert "liveness probe failed 1 times: exit code 1" in state.last_termination
    assert "No such file or directory" in state.last_termination
    wait_for(lambda: state.ready, "the restarted container to be ready")


def test_failing_readiness_takes_a_container_out_without_restarting_it(cluster: Cluster):
    container = server(volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}])
    container["readinessProbe"]["failureThreshold"] = 1
    body = deployment("flaky", [container], volumes=[{"name": "tmp", "emptyDir": {}}])
    pod = start_pod(cluster, body)
    state = pod.containers["app"]
    wait_for(lambda: pod.ready, "the pod to be ready")
    # What the container's /tmp holds, seen from the node (its emptyDir's directory).
    unready = pod.directory / "volumes" / "tmp" / "unready"
    unready.write_text("")
    wait_for(lambda: not pod.ready, "the pod to be taken out")
    assert pod.summary() == "NotReady"
    assert state.probe_failures[-1].startswith(
        "readiness probe failed: HTTP probe failed with statuscode: 503"
    )
    unready.unlink()
    wait_for(lambda: pod.ready, "the pod to be ready again")
    assert state.restarts == 0


def test_a_secret_that_does_not_exist_yet_holds_the_container_until_it_does(
    cluster: Cluster, quick_back_off: None
):
    container = server(
        env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    )
    pod = start_pod(cluster, deployment("waits", [container]))
    state = pod.containers["app"]
    wait_for(lambda: state.reason == "CreateContainerConfigError", "the container to wait")
    assert state.message == 'secret "late" not found'
    assert pod.summary() == "CreateContainerConfigError"
    assert state.pid is None and state.last_termination == ""
    cluster.apply(secret("late", {"token": "now here"}), "test")
    wait_for(lambda: pod.ready, "the pod to start once the Secret exists")
    assert get(pod, "/report")["env"]["TOKEN"] == "now here"


@pytest.mark.parametrize(
    ("image", "security", "message"),
    [
        (ROOT_IMAGE, {"runAsNonRoot": True}, "runAsNonRoot and image will run as root"),
        (IMAGE, {"runAsNonRoot": True, "runAsUser": 0}, "runAsNonRoot and image will run as root"),
    ],
)
def test_run_as_non_root_refuses_a_container_that_would_run_as_root(
    cluster: Cluster, image: str, security: dict[str, Any], message: str
):
    container = {"name": "app", "image": image, "command": ["id"], "securityContext": security}
    pod = start_pod(cluster, deployment("rooted", [container]))
    state = pod.containers["app"]
    wait_for(lambda: state.reason == "CreateContainerConfigError", "the container to be refused")
    assert message in state.message
    assert state.pid is None and not pod.log_tail("app")


@pytest.mark.parametrize(
    ("policy", "script", "phase", "reason", "restarts"),
    [
        ("Never", "exit 0", "Succeeded", "Completed", 0),
        ("Never", "exit 2", "Failed", "Error", 0),
        # OnFailure: restarted in the same pod until it succeeds (the emptyDir stays).
        (
            "OnFailure",
            "test -e /work/tried && exit 0; touch /work/tried; exit 1",
            "Succeeded",
            "Completed",
            1,
        ),
    ],
)
def test_a_job_pod_ends_as_its_container_exits(
    cluster: Cluster,
    quick_back_off: None,
    policy: str,
    script: str,
    phase: str,
    reason: str,
    restarts: int,
):
    container = {
        "name": "task",
        "image": IMAGE,
        "command": ["/bin/sh", "-c", script],
        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
    }
    body = deployment(
        "task",
        [container],
        kind="Job",
        restartPolicy=policy,
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    pod = start_pod(cluster, body)
    wait_for(lambda: pod.phase in ("Succeeded", "Failed"), "the pod to end")
    state = pod.containers["task"]
    assert (pod.phase, state.reason, state.restarts) == (phase, reason, restarts)
    assert pod.summary() == ("Succeeded" if phase == "Succeeded" else "Error")


def test_a_container_over_its_memory_limit_is_oom_killed(cluster: Cluster):
    allocate = "block = bytearray(96 * 2**20); block[::4096] = b'x' * len(block[::4096])"
    container = {
        "name": "hungry",
        "image": IMAGE,
        "command": ["python3", "-c", allocate],
        "resources": {"limits": {"memory": "32Mi"}},
    }
    pod = start_pod(cluster, deployment("hungry", [container], kind="Job", restartPolicy="Never"))
    wait_for(lambda: pod.phase == "Failed", "the pod to fail")
    state = pod.containers["hungry"]
    assert (state.reason, state.exit_code, state.oom_kills) == ("OOMKilled", 137, 1)
    assert state.message.startswith("memory limit 32 MiB reached (peak ")
    assert pod.summary() == "OOMKilled"


def test_a_stopped_pod_is_terminated_gracefully_and_leaves_nothing(cluster: Cluster):
    polite = server()
    stubborn = {"name": "stubborn", "image": IMAGE, "command": ["sleep", "300"]}
    body = deployment("stopping", [polite, stubborn], terminationGracePeriodSeconds=1)
    pod = start_pod(cluster, body)
    wait_for(lambda: pod.ready, "the pod to be ready")
    assert pod.endpoint is not None
    namespace, cgroups = pod.endpoint.namespace, list(pod.cgroups.values())
    pids = [state.pid for state in pod.containers.values()]
    started = time.monotonic()
    pod.stop()
    took = time.monotonic() - started
    # The server ends on SIGTERM; sleep, PID 1 without a handler, ignores it until SIGKILL.
    assert pod.log_tail("app", 5)[-1] == "terminated gracefully"
    assert pod.containers["app"].exit_code == 0
    assert pod.containers["stubborn"].exit_code == 128 + signal.SIGKILL
    assert 1 <= took < 10
    assert all(pid is not None and ended(pid) for pid in pids)
    assert namespace not in {path.name for path in NETNS_DIRECTORY.iterdir()}
    assert all(not leaf.exists() for cgroup in cgroups for leaf in cgroup.leaves)

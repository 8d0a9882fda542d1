"""`mlopsctl status --live`, from a real MLflow through Git to a real kube-apiserver.

Argo CD's controller and the kubelet cannot run here: the test writes the Application's status
(sync, health, the last operation) and the Deployment's status (replicas ready and updated) as
those two would, through the status subresource, and everything else is real: the registry, the
repository and its commits, the API server with the project's CRDs, the Deployment and the pinned
ConfigMap it reads.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlopsctl import server_validation
from mlopsctl.kubeapi import KubeApi
from tests.kube_apiserver import TestApiServer

ENVIRONMENT = "local"


def git(directory: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=directory, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def kube(api_server: TestApiServer) -> Any:
    client = KubeApi(api_server.kubeconfig)
    server_validation.prepare(client, [])
    for namespace in ("argocd", "ml-platform"):
        client.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            "",
            dry_run=False,
        )
    yield client
    client.close()


def write_status(kube: KubeApi, path: str, body: dict[str, Any]) -> None:
    status, answer = kube.request(
        "PATCH", f"{path}/status", json.dumps(body).encode(), "application/merge-patch+json"
    )
    assert status == 200, answer


def apply(kube: KubeApi, body: dict[str, Any]) -> None:
    refusal = kube.apply(body, body["metadata"].get("namespace", ""), dry_run=False)
    assert refusal is None, refusal


def deploy(
    kube: KubeApi,
    version: str,
    model: str,
    revision: str,
    sync: str = "Synced",
    health: str = "Healthy",
    phase: str = "Succeeded",
    ready: int = 1,
) -> None:
    """What Argo CD and the kubelet would leave behind after syncing `revision`."""
    application = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": f"model-server-{ENVIRONMENT}", "namespace": "argocd"},
        "spec": {
            "project": "platform",
            "source": {
                "repoURL": "https://github.com/example-org/mlops-platform.git",
                "targetRevision": "main",
                "path": f"overlays/{ENVIRONMENT}/model-server",
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "ml-platform"},
        },
    }
    apply(kube, application)
    write_status(
        kube,
        f"/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/model-server-{ENVIRONMENT}",
        {
            "status": {
                "sync": {"status": sync, "revision": revision},
                "health": {"status": health, "lastTransitionTime": "2026-12-02T06:00:00Z"},
                "operationState": {"phase": phase, "message": "one or more objects failed"},
            }
        },
    )
    pin = f"model-server-pin-{version}"
    apply(
        kube,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": pin, "namespace": "ml-platform"},
            "data": {"MODEL_URI": f"models:/{model}/{version}"},
        },
    )
    labels = {"app.kubernetes.io/name": "model-server"}
    apply(
        kube,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "model-server", "namespace": "ml-platform"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "model-server",
                                "image": "ghcr.io/example-org/mlops-platform/model-server:0.1.0",
                                "env": [
                                    {
                                        "name": "MODEL_URI",
                                        "valueFrom": {
                                            "configMapKeyRef": {"name": pin, "key": "MODEL_URI"}
                                        },
                                    }
                                ],
                            }
                        ]
                    },
                },
            },
        },
    )
    _status, deployment = kube.request(
        "GET", "/apis/apps/v1/namespaces/ml-platform/deployments/model-server"
    )
    write_status(
        kube,
        "/apis/apps/v1/namespaces/ml-platform/deployments/model-server",
        {
            "status": {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": 1,
                "updatedReplicas": 1,
                "readyReplicas": ready,
                "availableReplicas": ready,
            }
        },
    )


@pytest.fixture
def promoted(cli, platform, mlflow_server) -> tuple[Any, str, str]:
    """Version 1 moved to @challenger and promoted to local: (platform, commit before, after)."""
    mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    before = git(platform.remote, "rev-parse", "main")
    result = platform.command(cli, "promote", mlflow_server.url, "--env", ENVIRONMENT)
    assert result.exit_code == 0, result.stderr
    git(
        platform.checkout, "fetch", "--quiet", str(platform.remote), "main:refs/remotes/origin/main"
    )
    after = git(platform.remote, "rev-parse", "main")
    assert after != before
    return platform, before, after


def live_status(cli, platform, mlflow_url: str, kubeconfig: Path, *extra: str) -> Any:
    return cli(
        "status",
        "--repo",
        str(platform.checkout),
        "--mlflow-uri",
        mlflow_url,
        "--env",
        ENVIRONMENT,
        "--live",
        "--kubeconfig",
        str(kubeconfig),
        *extra,
    )


def live(cli, platform, mlflow_url: str, api_server: TestApiServer) -> tuple[int, dict[str, Any]]:
    result = live_status(cli, platform, mlflow_url, api_server.kubeconfig, "--format", "json")
    assert result.stdout, result.stderr
    [row] = [row for row in result.json()["rows"] if row["alias"] == "challenger"]
    return result.exit_code, row


def test_in_step_end_to_end(cli, promoted, mlflow_server, api_server, kube):
    platform, _before, after = promoted
    deploy(kube, "1", platform.model, after)
    exit_code, row = live(cli, platform, mlflow_server.url, api_server)
    assert (row["mlflow"], row["git"], row["served"], row["ready"]) == ("1", "1", "1", "1/1")
    assert (row["sync"], row["health"], row["operation"]) == ("Synced", "Healthy", "Succeeded")
    assert row["contains_promotion"] is True
    assert (row["state"], exit_code) == ("in step", 0)


@pytest.mark.parametrize(
    ("setting", "state", "detail"),
    [
        ({"revision": "before"}, "git ahead of cluster", "does not contain the pin's last commit"),
        ({"sync": "OutOfSync"}, "out of sync", "Argo CD says OutOfSync"),
        ({"phase": "Failed"}, "sync failed", "one or more objects failed"),
        ({"health": "Degraded"}, "degraded", "Degraded since 2026-12-02T06:00:00Z"),
        ({"version": "0"}, "pods on old version", "the pods serve 0, Git pins 1"),
        ({"ready": 0}, "rolling out", "1/1 updated, 0 ready"),
    ],
)
def test_each_way_of_being_out_of_step(
    cli, promoted, mlflow_server, api_server, kube, setting, state, detail
):
    platform, before, after = promoted
    arguments: dict[str, Any] = {"version": "1", "revision": after, **setting}
    if arguments["revision"] == "before":
        arguments["revision"] = before
    deploy(kube, model=platform.model, **arguments)
    exit_code, row = live(cli, platform, mlflow_server.url, api_server)
    assert (row["state"], exit_code) == (state, 1)
    assert detail in row["detail"]


def test_an_unreachable_cluster_is_a_row_not_a_crash(
    cli, promoted, mlflow_server, api_server, tmp_path
):
    platform, _before, _after = promoted
    kubeconfig = api_server.unreachable_kubeconfig(tmp_path / "kubeconfig")
    result = live_status(cli, platform, mlflow_server.url, kubeconfig)
    assert result.exit_code == 1
    assert "cluster unreachable: https://127.0.0.1:9: cannot reach the API server" in result.stdout

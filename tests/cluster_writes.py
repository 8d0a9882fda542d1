"""What Argo CD's controller and the kubelet would write, for tests against the real
kube-apiserver (tests/kube_apiserver.py). Those two cannot run here: the tests write the
Application's status (sync, health, the last operation) and the Deployment's status (replicas
ready and updated) as they would, through the status subresource; everything else (the API
server, the project's CRDs, the Deployment and the pinned ConfigMap it reads) is real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mlopsctl import server_validation
from mlopsctl.kubeapi import KubeApi
from tests.kube_apiserver import TestApiServer

ENVIRONMENT = "local"


@pytest.fixture
def kube(api_server: TestApiServer) -> Iterator[KubeApi]:
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

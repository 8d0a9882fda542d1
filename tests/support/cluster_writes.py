"""What Argo CD's controller and the kubelet would write, for tests against the real
kube-apiserver (tests/support/kube_apiserver.py). Those two cannot run here: the tests write the
Application's status (sync, health, the last operation) and the Deployment's status (replicas
ready and updated) as they would, through the status subresource; everything else (the API
server, the project's CRDs, the Deployment and the pinned ConfigMap it reads) is real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mlopsctl.base.kubeapi import KubeApi
from mlopsctl.validate import server_validation
from tests.support.kube_apiserver import TestApiServer

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
    old_pods: int = 0,
) -> None:
    """What Argo CD and the kubelet would leave behind after syncing `revision` of local's model
    server, serving `model` at `version` (and `old_pods` of the template before, still up)."""
    deploy_models(
        kube,
        ENVIRONMENT,
        "model-server",
        "ml-platform",
        [model],
        version,
        revision,
        sync=sync,
        health=health,
        phase=phase,
        ready=ready,
        old_pods=old_pods,
    )


def application(environment: str, component: str, namespace: str) -> dict[str, Any]:
    """The Application `<component>-<environment>` as apps/<environment> renders it, in the
    fields these tests and `status --live` read."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": f"{component}-{environment}", "namespace": "argocd"},
        "spec": {
            "project": "platform",
            "source": {
                "repoURL": "https://github.com/example-org/mlops-platform.git",
                "targetRevision": "main",
                "path": f"overlays/{environment}/{component}",
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
        },
    }


def deploy_models(
    kube: KubeApi,
    environment: str,
    component: str,
    namespace: str,
    models: list[str],
    version: str,
    revision: str,
    sync: str = "Synced",
    health: str = "Healthy",
    phase: str = "Succeeded",
    ready: int = 1,
    old_pods: int = 0,
) -> None:
    """The Application `<component>-<environment>` synced to `revision` and the Deployment
    `component` in `namespace`, whose pods read each model's `models:/<model>/<version>` from
    one ConfigMap, as the model server reads MODEL_URI."""
    name = f"{component}-{environment}"
    for body in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        application(environment, component, namespace),
    ):
        apply(kube, body)
    write_status(
        kube,
        f"/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/{name}",
        {
            "status": {
                "sync": {"status": sync, "revision": revision},
                "health": {"status": health, "lastTransitionTime": "2026-12-02T06:00:00Z"},
                "operationState": {"phase": phase, "message": "one or more objects failed"},
            }
        },
    )
    pin = f"{component}-pin-{version}"
    keys = {
        model: "MODEL_URI" if len(models) == 1 else f"MODEL_URI_{index}"
        for index, model in enumerate(models)
    }
    apply(
        kube,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": pin, "namespace": namespace},
            "data": {key: f"models:/{model}/{version}" for model, key in keys.items()},
        },
    )
    labels = {"app.kubernetes.io/name": component}
    container = {
        "name": component,
        "image": "ghcr.io/example-org/mlops-platform/model-server:0.1.0",
        "env": [
            {"name": key, "valueFrom": {"configMapKeyRef": {"name": pin, "key": key}}}
            for key in keys.values()
        ],
    }
    template = {"metadata": {"labels": labels}, "spec": {"containers": [container]}}
    apply(
        kube,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": component, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
        },
    )
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{component}"
    _status, deployment = kube.request("GET", path)
    write_status(
        kube,
        path,
        {
            "status": {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": 1 + old_pods,
                "updatedReplicas": 1,
                "readyReplicas": ready + old_pods,
                "availableReplicas": ready + old_pods,
            }
        },
    )

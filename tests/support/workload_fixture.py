"""A small repository with one workload that passes every policy, for the validation tests to
break one thing at a time in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.trees import MINIMAL_CONFIG, write_tree

LABELS = {
    "app.kubernetes.io/name": "web",
    "app.kubernetes.io/component": "frontend",
    "app.kubernetes.io/part-of": "example",
}


def good_deployment() -> dict[str, Any]:
    container = {
        "name": "web",
        "image": "registry.example.test/web:1.2.3",
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
        "livenessProbe": {"httpGet": {"path": "/live", "port": "http"}},
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": dict(LABELS)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                },
            },
        },
    }


def write_fixture(root: Path, documents: list[dict[str, Any]], kustomization: str = "") -> Path:
    return write_tree(
        root,
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "web/kustomization.yaml": kustomization or "resources:\n  - workload.yaml\n",
            "web/workload.yaml": yaml.safe_dump_all(documents, sort_keys=False),
        },
    )

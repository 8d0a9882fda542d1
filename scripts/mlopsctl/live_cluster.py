"""What one environment's cluster says about its model server, for `status --live`: the Argo CD
Application `<component>-<env>` (namespace argocd) and, in the namespace it deploys to, the
Deployment named like the component, the version its pod template pins (the `MODEL_URI` of the
ConfigMap it reads) and its rollout. Side effects: API server reads only.
"""

from __future__ import annotations

from typing import Any

from mlopsctl.kubeapi import KubeApi, KubeApiError
from mlopsctl.live_status import ApplicationState, ClusterView, ServedState

ARGOCD_NAMESPACE = "argocd"
PIN_VARIABLE = "MODEL_URI"


def read_cluster(kube: KubeApi, environment: str, component: str) -> ClusterView:
    try:
        status, application = kube.request(
            "GET",
            f"/apis/argoproj.io/v1alpha1/namespaces/{ARGOCD_NAMESPACE}/applications/"
            f"{component}-{environment}",
        )
        if status == 404:
            return ClusterView()
        if status != 200:
            return ClusterView(error=f"reading the Application: HTTP {status}")
        state = ApplicationState.of(application)
        namespace = str(((application.get("spec") or {}).get("destination") or {}).get("namespace"))
        status, deployment = kube.request(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{component}"
        )
        if status != 200:
            return ClusterView(application=state)
        return ClusterView(application=state, served=_served(kube, namespace, deployment))
    except KubeApiError as error:
        return ClusterView(error=str(error))


def _served(kube: KubeApi, namespace: str, deployment: dict[str, Any]) -> ServedState:
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    metadata = deployment.get("metadata") or {}
    return ServedState(
        version=_pinned_version(kube, namespace, spec),
        replicas=int(spec.get("replicas", 1)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        updated_replicas=int(status.get("updatedReplicas", 0)),
        observed=int(status.get("observedGeneration", 0)) >= int(metadata.get("generation", 0)),
    )


def _pinned_version(kube: KubeApi, namespace: str, spec: dict[str, Any]) -> str | None:
    """The version of the `models:/<name>/<version>` URI the pod template reads."""
    template = (spec.get("template") or {}).get("spec") or {}
    for container in template.get("containers") or []:
        for variable in container.get("env") or []:
            source = (variable.get("valueFrom") or {}).get("configMapKeyRef")
            if variable.get("name") != PIN_VARIABLE or not source:
                continue
            status, config_map = kube.request(
                "GET", f"/api/v1/namespaces/{namespace}/configmaps/{source['name']}"
            )
            if status != 200:
                return None
            uri = str((config_map.get("data") or {}).get(source["key"], ""))
            return uri.rsplit("/", 1)[-1] if uri.startswith("models:/") else None
    return None

"""What one environment's cluster says about the components that serve its models, for `status
--live`: the Argo CD Application `<component>-<env>` (namespace argocd) and, in the namespace it
deploys to, the Deployment named like the component, the versions its pod template pins (every
`models:/<name>/<version>` URI its containers read, directly or from a ConfigMap) and its rollout.

One reader per environment lists each kind once (Applications, then the Deployments and
ConfigMaps of each namespace a component deploys to), however many models the environment pins.
Side effects: API server reads only.
"""

from __future__ import annotations

from typing import Any

from mlopsctl.base.errors import KubeApiError
from mlopsctl.base.kubeapi import KubeApi
from mlopsctl.promote.live_status import ApplicationState, ClusterView, ServedState

ARGOCD_NAMESPACE = "argocd"
MODEL_URI_PREFIX = "models:/"


class EnvironmentReader:
    def __init__(self, kube: KubeApi, environment: str) -> None:
        self.kube = kube
        self.environment = environment
        self._applications: dict[str, dict[str, Any]] | None = None
        self._listed: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        # One view per component: every model the component serves is a row that asks for it,
        # and a view reads the whole pod template (2,000 variables, say) once.
        self._views: dict[str, ClusterView] = {}
        self._error = ""

    def view(self, component: str) -> ClusterView:
        if self._error:
            return ClusterView(error=self._error)
        try:
            if component not in self._views:
                self._views[component] = self._view(component)
            return self._views[component]
        except KubeApiError as error:
            # The cluster did not answer: every later row of this environment says so at once
            # rather than waiting out the same timeout again.
            self._error = str(error)
            return ClusterView(error=self._error)
        except _Refused as refused:
            return ClusterView(error=str(refused), refused=True)

    def _view(self, component: str) -> ClusterView:
        if self._applications is None:
            self._applications = self._list(
                f"/apis/argoproj.io/v1alpha1/namespaces/{ARGOCD_NAMESPACE}/applications",
                "the Applications",
            )
        application = self._applications.get(f"{component}-{self.environment}")
        if application is None:
            return ClusterView()
        state = ApplicationState.of(application)
        namespace = ((application.get("spec") or {}).get("destination") or {}).get("namespace")
        if not namespace:
            # Resources that name their own namespace: no one place to look for the Deployment.
            return ClusterView(application=state)
        deployment = self._in_namespace("apps/v1", "deployments", namespace).get(component)
        if deployment is None:
            return ClusterView(application=state)
        config_maps = self._in_namespace("v1", "configmaps", namespace)
        return ClusterView(application=state, served=_served(deployment, config_maps))

    def _in_namespace(self, group_version: str, plural: str, namespace: str) -> dict[str, Any]:
        key = (plural, namespace)
        if key not in self._listed:
            prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
            self._listed[key] = self._list(
                f"{prefix}/namespaces/{namespace}/{plural}", f"{plural} in {namespace}"
            )
        return self._listed[key]

    def _list(self, path: str, what: str) -> dict[str, dict[str, Any]]:
        status, listing = self.kube.request("GET", path)
        if status == 404:
            return {}  # the kind is not installed (no Argo CD yet) or no such namespace
        if status != 200:
            raise _Refused(f"listing {what}: HTTP {status} {listing.get('message', '')}".strip())
        return {
            str((item.get("metadata") or {}).get("name")): item
            for item in listing.get("items") or []
        }


class _Refused(Exception):
    """The API server answered, but not with the list (forbidden, say)."""


def _served(deployment: dict[str, Any], config_maps: dict[str, dict[str, Any]]) -> ServedState:
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    metadata = deployment.get("metadata") or {}
    return ServedState(
        versions=_pinned_versions(spec, config_maps),
        replicas=int(spec.get("replicas", 1)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        updated_replicas=int(status.get("updatedReplicas", 0)),
        current_replicas=int(status.get("replicas", 0)),
        available_replicas=int(status.get("availableReplicas", 0)),
        observed=int(status.get("observedGeneration", 0)) >= int(metadata.get("generation", 0)),
    )


def _pinned_versions(
    spec: dict[str, Any], config_maps: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """Model name -> version, from every `models:/<name>/<version>` the pod template reads."""

    def data_of(name: str) -> dict[str, Any]:
        data = (config_maps.get(name) or {}).get("data")
        return data if isinstance(data, dict) else {}

    values: list[str] = []
    template = (spec.get("template") or {}).get("spec") or {}
    for container in [*(template.get("initContainers") or []), *(template.get("containers") or [])]:
        for variable in container.get("env") or []:
            source = (variable.get("valueFrom") or {}).get("configMapKeyRef")
            if source:
                values.append(str(data_of(str(source.get("name"))).get(source.get("key"), "")))
            else:
                values.append(str(variable.get("value", "")))
        for source in container.get("envFrom") or []:
            if source.get("configMapRef"):
                values.extend(map(str, data_of(str(source["configMapRef"].get("name"))).values()))
    versions: dict[str, str] = {}
    for value in values:
        if value.startswith(MODEL_URI_PREFIX) and "@" not in value:
            name, _, version = value[len(MODEL_URI_PREFIX) :].rpartition("/")
            if name and version:
                versions[name] = version
    return versions

"""What `mlopsctl bootstrap` tells the user after it has applied: how the rollout goes, and how
to reach the UIs. Pure: Application objects, rendered resources and Helm values in; lines out.

Progress follows the fields Argo CD's controller writes on each Application (sync status,
health, the last operation's phase); a line is printed only when one of them changes, so a
rollout of ten Applications reads as a short story rather than a screen redrawn every poll.

The UIs are read from the repository: the hosts of the Ingresses the environment's Applications
deploy (rendered overlays, and the `ingress` sections of the Helm values they pass), and for the
UIs an Application links to on localhost (`link.argocd.argoproj.io/<name>`), the port-forward
that makes the link work.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlopsctl.base.resources import Resource
from mlopsctl.promote.live_status import ApplicationState

SYNCED = "Synced"
HEALTHY = "Healthy"
_FAILED_PHASES = frozenset({"Failed", "Error"})
LINK_PREFIX = "link.argocd.argoproj.io/"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})
ARGOCD_SERVER = "argocd-server"
ARGOCD_LOCAL_PORT = 8080
# Argo CD writes the first admin password here at its first start (and a person deletes it once
# it is changed).
ARGOCD_PASSWORD_SECRET = "argocd-initial-admin-secret"
# A Helm subchart's Service is named <release>-<chart> (Helm's fullname convention) and the
# Grafana chart serves on port 80 unless `service.port` says otherwise.
CHART_SERVICE_PORT = 80


# -- progress -----------------------------------------------------------------------------------


def progress_of(applications: Iterable[dict[str, Any]]) -> dict[str, ApplicationState]:
    states = [ApplicationState.of(application) for application in applications]
    return {state.name: state for state in sorted(states, key=lambda state: state.name)}


def is_done(state: ApplicationState) -> bool:
    return state.sync_status == SYNCED and state.health == HEALTHY


def describe(state: ApplicationState) -> str:
    text = f"{state.sync_status}, {state.health}"
    if state.operation_phase in _FAILED_PHASES:
        text += f", last sync {state.operation_phase}: {state.operation_message}"
    return text


def progress_lines(
    previous: Mapping[str, ApplicationState], current: Mapping[str, ApplicationState]
) -> list[str]:
    """One line per Application that appeared, changed or went away since the last poll."""
    width = max((len(name) for name in [*previous, *current]), default=0)
    lines = []
    for name, state in current.items():
        before = previous.get(name)
        if before is None or describe(before) != describe(state):
            lines.append(f"{name.ljust(width)}  {describe(state)}")
    lines.extend(f"{name.ljust(width)}  deleted" for name in previous if name not in current)
    return lines


def unfinished(current: Mapping[str, ApplicationState]) -> list[ApplicationState]:
    return [state for state in current.values() if not is_done(state)]


def timeout_message(current: Mapping[str, ApplicationState], seconds: float) -> str:
    if not current:
        return f"no Argo CD Application appeared in {seconds:g} s"
    waiting = "; ".join(f"{state.name} ({describe(state)})" for state in unfinished(current))
    return f"not Synced and Healthy after {seconds:g} s: {waiting}"


# -- how to reach the UIs -----------------------------------------------------------------------


@dataclass(frozen=True)
class ApplicationRender:
    """One Application of the environment as this repository renders it: what its Kustomize
    source makes (nothing for a chart), and for a chart its release and merged values."""

    application: Resource
    resources: tuple[Resource, ...] = ()
    release: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        spec = self.application.body.get("spec") or {}
        return str((spec.get("destination") or {}).get("namespace", ""))


def merged_values(documents: Iterable[Any]) -> dict[str, Any]:
    """Helm's merge of value files, in order, a later file winning: maps merge key by key,
    anything else replaces, and a null removes the key."""
    merged: dict[str, Any] = {}
    for document in documents:
        if isinstance(document, dict):
            merged = _merge(merged, document)
    return merged


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


def argocd_lines(install: Iterable[Resource]) -> list[str]:
    """How to open Argo CD's UI: a port-forward to argocd-server, and the first password."""
    for resource in install:
        if resource.kind != "Service" or resource.name != ARGOCD_SERVER:
            continue
        ports = (resource.body.get("spec") or {}).get("ports") or []
        https = next((port for port in ports if port.get("name") == "https"), None) or (
            ports[0] if ports else {"port": 443}
        )
        namespace = resource.namespace or "argocd"
        return [
            f"Argo CD: kubectl port-forward -n {namespace} svc/{ARGOCD_SERVER} "
            f"{ARGOCD_LOCAL_PORT}:{https['port']}, then https://localhost:{ARGOCD_LOCAL_PORT}",
            f"  user admin, password: kubectl -n {namespace} get secret "
            f"{ARGOCD_PASSWORD_SECRET} -o jsonpath='{{.data.password}}' | base64 -d",
        ]
    return ["Argo CD: the install renders no argocd-server Service; see Argo CD's documentation"]


def ingress_urls(renders: Iterable[ApplicationRender]) -> list[tuple[str, str]]:
    """(what, URL) of every host an Ingress of the environment answers on."""
    found: list[tuple[str, str]] = []
    for render in renders:
        application = render.application.name
        for resource in render.resources:
            if resource.kind != "Ingress":
                continue
            spec = resource.body.get("spec") or {}
            hosts = [rule.get("host") for rule in spec.get("rules") or []]
            found.extend((f"{resource.name} ({application})", url) for url in _urls(hosts, spec))
        for path, section in _ingress_sections(render.values, ""):
            found.extend(
                (f"{path} ({application})", url)
                for url in _urls(section.get("hosts") or [], section)
            )
    return found


def _urls(hosts: Iterable[Any], ingress: Mapping[str, Any]) -> list[str]:
    """https:// for the hosts the Ingress has TLS for, http:// for the others."""
    secured = {host for tls in ingress.get("tls") or [] for host in tls.get("hosts") or []}
    return [
        f"{'https' if host in secured else 'http'}://{host}"
        for host in hosts
        if isinstance(host, str) and host
    ]


def _ingress_sections(values: Mapping[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, section) of every enabled `ingress` section of a chart's values."""
    for key, value in values.items():
        if not isinstance(value, dict) or value.get("enabled") is False:
            continue
        if key == "ingress":
            if value.get("enabled") is True:
                yield path, value
        else:
            yield from _ingress_sections(value, f"{path}.{key}" if path else str(key))


def local_links(renders: Iterable[ApplicationRender]) -> dict[str, str]:
    """name -> URL of the Argo CD links to localhost the Applications carry (deduplicated)."""
    links: dict[str, str] = {}
    for render in renders:
        for key, value in render.application.annotations.items():
            if not key.startswith(LINK_PREFIX):
                continue
            if urllib.parse.urlsplit(str(value)).hostname in _LOCAL_HOSTS:
                links.setdefault(key.removeprefix(LINK_PREFIX), str(value))
    return links


def port_forward(name: str, url: str, renders: list[ApplicationRender]) -> str | None:
    """The port-forward that makes a localhost link work: to a rendered Service with the link's
    port, else to the Service of the chart section the link is named after."""
    local_port = urllib.parse.urlsplit(url).port or 80
    for render in renders:
        for resource in render.resources:
            if resource.kind != "Service":
                continue
            for port in (resource.body.get("spec") or {}).get("ports") or []:
                if port.get("port") == local_port:
                    namespace = resource.namespace or render.namespace
                    return (
                        f"kubectl port-forward -n {namespace} svc/{resource.name} "
                        f"{local_port}:{local_port}"
                    )
    for render in renders:
        for section, settings in render.values.items():
            if not isinstance(settings, dict) or settings.get("enabled") is False:
                continue
            if section in name and render.release:
                remote = (settings.get("service") or {}).get("port", CHART_SERVICE_PORT)
                return (
                    f"kubectl port-forward -n {render.namespace} svc/{render.release}-{section} "
                    f"{local_port}:{remote}"
                )
    return None


def login_lines(renders: Iterable[ApplicationRender]) -> list[str]:
    """Where a chart's UI keeps its admin login: `<section>.admin.existingSecret` (Grafana's)."""
    lines = []
    for render in renders:
        for section, settings in render.values.items():
            admin = settings.get("admin") if isinstance(settings, dict) else None
            if isinstance(admin, dict) and admin.get("existingSecret"):
                keys = ", ".join(
                    str(admin[key]) for key in ("userKey", "passwordKey") if admin.get(key)
                )
                lines.append(
                    f"{section} login: Secret {render.namespace}/{admin['existingSecret']}"
                    + (f" (keys {keys})" if keys else "")
                )
    return lines


def access_lines(
    environment: str, install: Iterable[Resource], renders: Iterable[ApplicationRender]
) -> list[str]:
    listed = list(renders)
    lines = argocd_lines(install)
    urls = ingress_urls(listed)
    for what, url in urls:
        lines.append(f"{what}: {url}")
    for name, url in local_links(listed).items():
        command = port_forward(name, url, listed)
        how = f"after {command}" if command else "(no Service found here to forward to)"
        lines.append(f"{name}: {url} {how}")
    lines.extend(login_lines(listed))
    if not urls:
        lines.append(
            f"No Ingress in {environment}: the UIs are reached through port-forwards. Without a "
            f"cluster, `mlopsctl up --env {environment}` runs the environment on this machine "
            "and opens its own."
        )
    return lines

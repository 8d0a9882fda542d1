"""`mlopsctl bootstrap`'s side effects on a cluster, through `KubeApi`: reading the kubeconfig,
reaching the API server, looking up and creating the hand-made Secrets, applying rendered
manifests with server-side apply (CRDs first, then what needs them), and polling Argo CD's
Applications. Every failure is a `KubeApiError` that names the object and the server.

Secrets are only ever created (POST after a 404), never applied: server-side apply would
overwrite the values of a Secret someone made by hand, which may be in use.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from mlopsctl.base.config import HandMadeSecret
from mlopsctl.base.errors import KubeApiError
from mlopsctl.base.kubeapi import FIELD_MANAGER, KubeApi
from mlopsctl.base.resources import Resource
from mlopsctl.bootstrap.plan import as_applied, crds_and_the_rest, served_kinds
from mlopsctl.bootstrap.report import progress_lines, progress_of, unfinished
from mlopsctl.promote.live_status import ApplicationState

ARGOCD_NAMESPACE = "argocd"
APPLICATIONS_PATH = f"/apis/argoproj.io/v1alpha1/namespaces/{ARGOCD_NAMESPACE}/applications"
CRD_ESTABLISHED_SECONDS = 60
POLL_SECONDS = 2.0
DEFAULT_NAMESPACE = "default"

Log = Callable[[str], None]


def chosen_context(kubeconfig: Path, requested: str | None) -> str:
    """The context a bootstrap would use: `requested`, else the kubeconfig's current one."""
    try:
        document = yaml.safe_load(kubeconfig.read_text(encoding="utf-8"))
    except OSError as error:
        raise KubeApiError(
            f"{kubeconfig}: cannot read the kubeconfig: {error.strerror or error}"
        ) from error
    except yaml.YAMLError as error:
        raise KubeApiError(f"{kubeconfig}: the kubeconfig is not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise KubeApiError(f"{kubeconfig}: not a kubeconfig (no mapping at the top level)")
    name = requested or document.get("current-context")
    if not name:
        raise KubeApiError(f"{kubeconfig}: no current-context: pass --context")
    contexts = sorted(
        str(item.get("name"))
        for item in document.get("contexts") or []
        if isinstance(item, dict) and item.get("name")
    )
    if name not in contexts:
        raise KubeApiError(f"{kubeconfig}: no context {name!r} (has {contexts})")
    return str(name)


def connect(kubeconfig: Path, context: str) -> KubeApi:
    """A client of the context's API server, once the server has answered with these
    credentials."""
    kube = KubeApi(kubeconfig, context)
    try:
        status, answer = kube.request("GET", "/api/v1/namespaces?limit=1")
    except KubeApiError as error:
        kube.close()
        raise KubeApiError(f"context {context!r} ({kubeconfig}): {error}") from error
    if status != 200:
        kube.close()
        raise KubeApiError(
            f"{kube.server} (context {context!r}): the API server refuses these credentials: "
            f"HTTP {status}: {answer.get('message', '')}"
        )
    return kube


class Cluster:
    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube

    def _exists(self, path: str, what: str) -> bool:
        status, answer = self.kube.request("GET", path)
        if status == 200:
            return True
        if status == 404:
            return False
        raise KubeApiError(
            f"{self.kube.server}: cannot read {what}: HTTP {status}: {answer.get('message', '')}"
        )

    def existing_namespaces(self, names: Iterable[str]) -> set[str]:
        return {
            name
            for name in set(names)
            if self._exists(f"/api/v1/namespaces/{_quoted(name)}", f"namespace {name}")
        }

    def existing_secrets(self, secrets: Iterable[HandMadeSecret]) -> set[tuple[str, str]]:
        """(namespace, name) of those of `secrets` the cluster has. Reads only their metadata's
        existence; their values are not looked at."""
        return {
            (secret.namespace, secret.name)
            for secret in secrets
            if self._exists(
                f"/api/v1/namespaces/{_quoted(secret.namespace)}/secrets/{_quoted(secret.name)}",
                f"Secret {secret.namespace}/{secret.name}",
            )
        }

    def _create(self, collection: str, body: dict[str, Any], what: str) -> bool:
        """True when created, False when it appeared meanwhile (kept as it is)."""
        query = urllib.parse.urlencode({"fieldManager": FIELD_MANAGER})
        status, answer = self.kube.request(
            "POST", f"{collection}?{query}", json.dumps(body).encode(), "application/json"
        )
        if status in (200, 201):
            return True
        if status == 409:
            return False
        # The answer names the field the server refuses; it never echoes a Secret's data.
        raise KubeApiError(
            f"{self.kube.server}: {what}: the API server refuses it: HTTP {status}: "
            f"{answer.get('message', '')}"
        )

    def create_namespace(self, name: str) -> bool:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        return self._create("/api/v1/namespaces", body, f"namespace {name}")

    def create_secret(self, body: dict[str, Any]) -> bool:
        metadata = body["metadata"]
        return self._create(
            f"/api/v1/namespaces/{_quoted(metadata['namespace'])}/secrets",
            body,
            f"Secret {metadata['namespace']}/{metadata['name']}",
        )

    def apply_render(self, root: str, resources: list[Resource]) -> tuple[int, int]:
        """Server-side apply of a render: CRDs, then (once served) Namespaces, then the rest.
        Returns (CRDs, other objects) applied."""
        crds, rest = crds_and_the_rest(resources)
        for resource in crds:
            self._apply(root, resource)
        if crds:
            self._wait_until_served(root, crds)
        for resource in rest:
            self._apply(root, resource)
        return len(crds), len(rest)

    def preflight(self, root: str, resources: list[Resource]) -> int:
        """A server-side dry run of every object the server can judge before anything is made:
        those of a kind it serves, in a namespace that exists (or cluster-wide). Returns how many
        it judged; the rest (custom resources of CRDs not installed yet, objects in namespaces
        still to come) meet the server when they are applied."""
        served = self.kube.resources()
        namespaces = self.existing_namespaces(
            {resource.namespace or DEFAULT_NAMESPACE for resource in resources}
        )
        judged = 0
        for resource in resources:
            kind = served.get((resource.api_version, resource.kind))
            namespace = resource.namespace or DEFAULT_NAMESPACE
            if kind is None or (kind.namespaced and namespace not in namespaces):
                continue
            self._apply(root, resource, dry_run=True)
            judged += 1
        return judged

    def _apply(self, root: str, resource: Resource, dry_run: bool = False) -> None:
        refusal = self.kube.apply(
            as_applied(resource), resource.namespace or DEFAULT_NAMESPACE, dry_run=dry_run
        )
        if refusal is not None:
            # The causes name the fields; the message alone wraps them in the server's jargon.
            why = "; ".join(
                f"{field}: {problem}" if field else problem for field, problem in refusal.causes
            )
            after = (
                "nothing was changed (dry run, before creating anything)"
                if dry_run
                else "what was created or applied before it stays; fix it and run bootstrap "
                "again (it keeps what exists)"
            )
            raise KubeApiError(
                f"{root}: {resource.reference}: the API server ({self.kube.server}) refuses it: "
                f"{why or refusal.message}; {after}"
            )

    def _wait_until_served(self, root: str, crds: list[Resource]) -> None:
        """Until every CRD is Established and discovery lists its kinds: applying an object of
        a kind the server has just learnt fails until both are true."""
        deadline = time.monotonic() + CRD_ESTABLISHED_SECONDS
        pending = [crd.name for crd in crds]
        wanted = [kind for crd in crds for kind in served_kinds(crd)]
        while True:
            pending = [name for name in pending if not self._established(name)]
            self.kube.forget_discovery()
            served = self.kube.resources() if not pending else {}
            missing = [
                f"{version} {kind}" for version, kind in wanted if (version, kind) not in served
            ]
            if not pending and not missing:
                return
            if time.monotonic() > deadline:
                raise KubeApiError(
                    f"{root}: not served {CRD_ESTABLISHED_SECONDS} s after applying their CRDs: "
                    f"{', '.join(pending or missing)}"
                )
            time.sleep(0.2)

    def _established(self, name: str) -> bool:
        status, answer = self.kube.request(
            "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{_quoted(name)}"
        )
        conditions = (answer.get("status") or {}).get("conditions") or []
        return status == 200 and any(
            condition.get("type") == "Established" and condition.get("status") == "True"
            for condition in conditions
        )

    def applications(self) -> list[dict[str, Any]]:
        status, answer = self.kube.request("GET", APPLICATIONS_PATH)
        if status != 200:
            raise KubeApiError(
                f"{self.kube.server}: cannot list the Applications in namespace "
                f"{ARGOCD_NAMESPACE}: HTTP {status}: {answer.get('message', '')}"
            )
        items: list[dict[str, Any]] = answer.get("items") or []
        return items


def watch_applications(
    cluster: Cluster,
    timeout_seconds: float,
    log: Log,
    poll_seconds: float | None = None,
) -> tuple[bool, dict[str, ApplicationState]]:
    """Poll the Applications until every one is Synced and Healthy (True) or the time is up
    (False), logging each change; also the last states seen."""
    poll_seconds = poll_seconds or POLL_SECONDS
    started = time.monotonic()
    previous: dict[str, ApplicationState] = {}
    last_error = ""
    while True:
        elapsed = time.monotonic() - started
        try:
            current = progress_of(cluster.applications())
            last_error = ""
        except KubeApiError as error:
            # A blip of the API server while Argo CD rolls out is no reason to stop watching.
            current = previous
            if str(error) != last_error:
                log(f"{elapsed:5.0f} s  cannot read the Applications: {error}")
            last_error = str(error)
        for line in progress_lines(previous, current):
            log(f"{elapsed:5.0f} s  {line}")
        previous = current
        if current and not unfinished(current):
            return True, current
        remaining = timeout_seconds - (time.monotonic() - started)
        if remaining <= 0:
            return False, current
        time.sleep(min(poll_seconds, remaining))


def _quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="")

"""`mlopsctl validate --server`: every rendered resource applied to an API server with server-side
dry-run and strict field validation, each refusal a finding that names the file, resource and
field, as the other checks do. The server catches what schemas cannot: defaulting, immutable
fields, CEL rules, admission.

`prepare` is for a throwaway API server (the tests', or a kind cluster): it installs the CRDs made
from the project's schemas and creates the namespaces the resources name, for real. Against a
real cluster leave it off: its own CRDs stay, and a namespace that does not exist yet is reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from mlopsctl.base.errors import KubeApiError
from mlopsctl.base.kubeapi import KubeApi
from mlopsctl.base.resources import Resource
from mlopsctl.validate.crds import project_crds
from mlopsctl.validate.findings import Finding
from mlopsctl.validate.schemas.store import PROJECT_SCHEMA_DIR
from mlopsctl.validate.sources import SourceIndex

CHECK = "server"
DEFAULT_NAMESPACE = "default"
CRD_ESTABLISHED_SECONDS = 60


def prepare(kube: KubeApi, resources: Iterable[Resource]) -> None:
    """Install the project's CRDs (waiting until the server serves them) and create every
    namespace the resources name."""
    crds = project_crds(PROJECT_SCHEMA_DIR)
    for definition in crds:
        refusal = kube.apply(definition, "", dry_run=False)
        if refusal is not None:
            raise KubeApiError(
                f"CRD {definition['metadata']['name']} (from the project's schemas) refused: "
                f"{refusal.message}"
            )
    deadline = time.monotonic() + CRD_ESTABLISHED_SECONDS
    pending = [definition["metadata"]["name"] for definition in crds]
    while pending:
        pending = [name for name in pending if not _established(kube, name)]
        if pending and time.monotonic() > deadline:
            raise KubeApiError(f"CRDs not established in {CRD_ESTABLISHED_SECONDS} s: {pending}")
        if pending:
            time.sleep(0.2)
    kube.forget_discovery()
    namespaces = {resource.namespace for resource in resources if resource.namespace}
    for namespace in sorted(namespaces | {DEFAULT_NAMESPACE}):
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        refusal = kube.apply(body, "", dry_run=False)
        if refusal is not None:
            raise KubeApiError(f"namespace {namespace} refused: {refusal.message}")


def _established(kube: KubeApi, name: str) -> bool:
    status, answer = kube.request(
        "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    )
    conditions: list[dict[str, Any]] = (answer.get("status") or {}).get("conditions") or []
    return status == 200 and any(
        condition.get("type") == "Established" and condition.get("status") == "True"
        for condition in conditions
    )


def server_findings(
    kube: KubeApi, resources: Iterable[Resource], index: SourceIndex
) -> list[Finding]:
    findings: list[Finding] = []
    for resource in resources:
        refusal = kube.apply(resource.body, resource.namespace or DEFAULT_NAMESPACE, dry_run=True)
        if refusal is None:
            continue
        where = index.locate(resource)
        causes = refusal.causes or [("", refusal.message)]
        for field_name, message in causes:
            findings.append(
                Finding(
                    where,
                    resource.reference,
                    field_name,
                    f"the API server refuses it: {message}",
                    CHECK,
                    resource.root,
                )
            )
    return findings

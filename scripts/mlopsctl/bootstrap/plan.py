"""What `mlopsctl bootstrap` decides before it touches a cluster. Pure: names, configuration,
what the cluster already has and rendered resources in; refusals, plans and apply order out.

- The context check: a bootstrap installs Argo CD and points it at one environment's apps, so
  running it against the wrong cluster is costly to undo. The context must be the environment's
  `kubeContext` (mlopsctl.yaml) when it names one, else its name must contain the environment's.
- The Secrets plan: which hand-made Secrets (and their namespaces) to create, which to keep; a
  Secret that exists is never rewritten (its values may already be in use: a Fernet key that
  MLflow encrypted webhook secrets with, a password Grafana stored).
- The apply order: CRDs first (nothing of their kinds can be applied before the server serves
  them), then namespaces, then the rest in the render's order; and what is applied, so that a
  second apply of the same render changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Any

from mlopsctl.base.config import HandMadeSecret
from mlopsctl.base.hand_made_secrets import needs_git_token
from mlopsctl.base.resources import Resource

CONFIRM_FLAG = "--confirm-context"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def context_refusal(
    environment: str, context: str, configured: str | None, confirmed: str | None
) -> str | None:
    """Why `context` may not be bootstrapped as `environment`, or None when it may.

    `configured` is mlopsctl.yaml's environments.<env>.kubeContext; `confirmed` the context the
    user vouched for with --confirm-context, which counts only when it is this very context (so a
    confirmation left in a script does not carry over to whatever the kubeconfig points at next).
    """
    if confirmed is not None:
        if confirmed == context:
            return None
        return (
            f"{CONFIRM_FLAG} {confirmed!r} does not name the context in use, {context!r}: "
            f"it confirms one context by name"
        )
    override = f"pass {CONFIRM_FLAG} {context} to bootstrap it as {environment!r} anyway"
    if configured is not None:
        if context == configured:
            return None
        return (
            f"context {context!r} is not environment {environment!r}'s cluster: mlopsctl.yaml "
            f"names {configured!r} (environments.{environment}.kubeContext); pass --context "
            f"{configured}, or {override}"
        )
    if environment.lower() in context.lower():
        return None
    return (
        f"context {context!r} does not look like environment {environment!r}'s cluster: its "
        f"name does not contain {environment!r} and mlopsctl.yaml names no "
        f"environments.{environment}.kubeContext; pass --context with the environment's context, "
        f"or {override}"
    )


@dataclass(frozen=True)
class SecretsPlan:
    namespaces_to_create: tuple[str, ...]
    to_create: tuple[HandMadeSecret, ...]
    kept: tuple[HandMadeSecret, ...]

    @property
    def needs_git_token(self) -> bool:
        return any(needs_git_token(secret) for secret in self.to_create)


def plan_secrets(
    expected: Iterable[HandMadeSecret],
    existing_secrets: Set[tuple[str, str]],
    existing_namespaces: Set[str],
) -> SecretsPlan:
    """`existing_secrets` holds (namespace, name) of the expected Secrets the cluster has."""
    to_create: list[HandMadeSecret] = []
    kept: list[HandMadeSecret] = []
    for secret in expected:
        present = (secret.namespace, secret.name) in existing_secrets
        (kept if present else to_create).append(secret)
    namespaces = sorted({secret.namespace for secret in to_create} - set(existing_namespaces))
    return SecretsPlan(tuple(namespaces), tuple(to_create), tuple(kept))


def git_token_refusal(plan: SecretsPlan, token: str | None, variable: str) -> str | None:
    """Why the plan cannot be carried out for want of a git token, or None."""
    if not plan.needs_git_token or token:
        return None
    missing = ", ".join(
        f"{secret.namespace}/{secret.name}" for secret in plan.to_create if needs_git_token(secret)
    )
    state = "is empty" if token == "" else "is not set"
    return (
        f"Secret {missing} needs a git token (a token that may push to this repository) and "
        f"${variable} {state}: set it (or name another variable with --git-token-env); nothing "
        f"was created"
    )


def crds_and_the_rest(resources: Iterable[Resource]) -> tuple[list[Resource], list[Resource]]:
    """(the CRDs, everything else with Namespaces first), each in the render's order."""
    listed = list(resources)
    crds = [resource for resource in listed if resource.kind == "CustomResourceDefinition"]
    rest = [resource for resource in listed if resource.kind != "CustomResourceDefinition"]
    namespaces = [resource for resource in rest if _is_namespace(resource)]
    return crds, namespaces + [resource for resource in rest if not _is_namespace(resource)]


def as_applied(resource: Resource) -> dict[str, Any]:
    """The body to apply. A Namespace gets the `kubernetes.io/metadata.name` label the API server
    sets on every Namespace anyway: applied with no field of its own, a Namespace is created
    with no managed fields, and the next apply then records the server's label as someone
    else's and changes the object, so a second bootstrap would not be a no-op."""
    if not _is_namespace(resource):
        return resource.body
    metadata = dict(resource.metadata)
    metadata["labels"] = {**resource.labels, NAMESPACE_NAME_LABEL: resource.name}
    return {**resource.body, "metadata": metadata}


def _is_namespace(resource: Resource) -> bool:
    return resource.api_version == "v1" and resource.kind == "Namespace"


def served_kinds(crd: Resource) -> list[tuple[str, str]]:
    """(apiVersion, kind) pairs a CRD makes the server serve."""
    spec = crd.body.get("spec") or {}
    group, kind = str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))
    return [
        (f"{group}/{version['name']}", kind)
        for version in spec.get("versions") or []
        if isinstance(version, dict) and version.get("served", True)
    ]

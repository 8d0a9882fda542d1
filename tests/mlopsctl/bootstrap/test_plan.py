"""mlopsctl.bootstrap.plan: what a bootstrap decides before it touches a cluster. Whether the
context may be bootstrapped as the environment, which hand-made Secrets to create and which to
keep (and whether that needs a git token), and the order a render is applied in."""

from __future__ import annotations

import pytest

from mlopsctl.base.config import HandMadeSecret
from mlopsctl.base.resources import Resource
from mlopsctl.bootstrap.plan import (
    context_refusal,
    crds_and_the_rest,
    git_token_refusal,
    plan_secrets,
    served_kinds,
)


@pytest.mark.parametrize(
    ("context", "configured", "confirmed", "refused"),
    [
        ("kind-local", None, None, None),
        ("minikube-LOCAL", None, None, None),
        ("gke-staging", None, None, "does not look like environment 'local''s cluster"),
        ("gke-staging", None, "gke-staging", None),
        ("gke-staging", None, "kind-local", "does not name the context in use, 'gke-staging'"),
        ("office", "office", None, None),
        ("kind-local", "office", None, "mlopsctl.yaml names 'office'"),
        ("kind-local", "office", "kind-local", None),
    ],
)
def test_context_check(
    context: str, configured: str | None, confirmed: str | None, refused: str | None
) -> None:
    refusal = context_refusal("local", context, configured, confirmed)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal and context in refusal


def test_secrets_plan_keeps_what_exists_and_wants_a_token_only_for_a_missing_git_token() -> None:
    promoter = HandMadeSecret("ml-platform", "promoter", (("git-token", "git-token"),))
    grafana = HandMadeSecret("monitoring", "grafana-admin", (("admin-user", "literal:admin"),))

    everything_missing = plan_secrets([promoter, grafana], set(), {"ml-platform"})
    assert everything_missing.to_create == (promoter, grafana)
    assert everything_missing.namespaces_to_create == ("monitoring",)
    refusal = git_token_refusal(everything_missing, None, "GIT_TOKEN")
    assert refusal is not None and "ml-platform/promoter" in refusal
    assert "grafana-admin" not in refusal
    assert git_token_refusal(everything_missing, "t", "GIT_TOKEN") is None

    promoter_exists = plan_secrets([promoter, grafana], {("ml-platform", "promoter")}, set())
    assert promoter_exists.kept == (promoter,)
    assert promoter_exists.namespaces_to_create == ("monitoring",)
    assert git_token_refusal(promoter_exists, None, "GIT_TOKEN") is None


def test_apply_order_puts_crds_then_namespaces_first() -> None:
    def resource(kind: str, name: str, api_version: str = "v1") -> Resource:
        return Resource("r", {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}})

    rendered = [
        resource("ConfigMap", "c"),
        resource("Namespace", "n"),
        resource("CustomResourceDefinition", "d", "apiextensions.k8s.io/v1"),
        resource("Deployment", "x", "apps/v1"),
    ]
    crds, rest = crds_and_the_rest(rendered)
    assert [item.name for item in crds] == ["d"]
    assert [item.name for item in rest] == ["n", "c", "x"]


def test_only_the_versions_a_crd_serves_are_waited_for() -> None:
    """Bootstrap waits until discovery lists each kind a CRD serves: a version the CRD keeps
    but does not serve never appears there, and waiting for it would time out."""
    definition = Resource(
        "r",
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.test"},
            "spec": {
                "group": "example.test",
                "names": {"kind": "Widget", "plural": "widgets"},
                "versions": [
                    {"name": "v1", "served": True, "storage": True},
                    {"name": "v1beta1", "served": False, "storage": False},
                    {"name": "v2alpha1", "storage": False},  # served unless it says otherwise
                ],
            },
        },
    )
    assert served_kinds(definition) == [
        ("example.test/v1", "Widget"),
        ("example.test/v2alpha1", "Widget"),
    ]

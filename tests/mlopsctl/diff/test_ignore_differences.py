"""mlopsctl.diff.ignore_differences: Argo CD's ignoreDifferences (an Application's own and
argocd-cm's) read, and applied to a rendered object before it is compared."""

from __future__ import annotations

from typing import Any

import pytest

from mlopsctl.base.resources import Resource
from mlopsctl.diff.ignore_differences import (
    IgnoreRule,
    application_ignore_rules,
    apply_ignore_rules,
    parse_jq_path,
    system_ignore_rules,
)
from mlopsctl.diff.manifests import ResourceKey

REPOSITORY = "https://github.com/example/platform.git"
PREFIX = "resource.customizations.ignoreDifferences."
DEPLOYMENT = ResourceKey("apps", "Deployment", "serving", "model-server")


def a_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "model-server", "annotations": {"team/owner": "ml"}},
        "spec": {
            "replicas": 3,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "server", "image": "server:1", "env": [{"name": "A"}]},
                        {"name": "sidecar", "image": "proxy:2"},
                    ]
                }
            },
        },
    }


def an_application(name: str, spec: dict[str, Any]) -> Resource:
    return Resource(
        "clusters/prod",
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def trimmed(rule: IgnoreRule, warnings: set[str] | None = None) -> dict[str, Any]:
    return apply_ignore_rules(
        DEPLOYMENT, a_deployment(), [rule], set() if warnings is None else warnings
    )


def test_a_json_pointer_removes_its_field_and_leaves_the_original_alone() -> None:
    body = a_deployment()
    result = apply_ignore_rules(
        DEPLOYMENT,
        body,
        [IgnoreRule("apps", "Deployment", json_pointers=("/spec/replicas",))],
        set(),
    )
    assert "replicas" not in result["spec"]
    assert body["spec"]["replicas"] == 3


def test_a_pointer_that_empties_a_mapping_removes_the_mapping_too() -> None:
    result = trimmed(
        IgnoreRule("apps", "Deployment", json_pointers=("/metadata/annotations/team~1owner",))
    )
    assert result["metadata"] == {"name": "model-server"}


def test_a_pointer_into_a_list_uses_the_index() -> None:
    result = trimmed(
        IgnoreRule("apps", "*", json_pointers=("/spec/template/spec/containers/1/image",))
    )
    assert result["spec"]["template"]["spec"]["containers"][1] == {"name": "sidecar"}


def test_a_jq_path_over_every_container_removes_each_field() -> None:
    result = trimmed(
        IgnoreRule("apps", "Deployment", jq_paths=(".spec.template.spec.containers[]?.image",))
    )
    containers = result["spec"]["template"]["spec"]["containers"]
    assert containers == [{"name": "server", "env": [{"name": "A"}]}, {"name": "sidecar"}]


def test_paths_that_select_nothing_delete_nothing() -> None:
    rule = IgnoreRule(
        "apps",
        "Deployment",
        json_pointers=("/spec/nothing/here", "/spec/template/spec/containers/7"),
        jq_paths=(".status.replicas", ".spec.replicas[0]"),
    )
    assert trimmed(rule) == a_deployment()


def test_a_rule_for_other_objects_returns_the_body_unchanged() -> None:
    body = a_deployment()
    rules = [
        IgnoreRule("", "Service", json_pointers=("/spec",)),
        IgnoreRule("apps", "Deployment", name="other", json_pointers=("/spec",)),
        IgnoreRule("apps", "Deployment", namespace="default", json_pointers=("/spec",)),
    ]
    assert apply_ignore_rules(DEPLOYMENT, body, rules, set()) is body


def test_rules_it_cannot_apply_are_warned_about_and_compared() -> None:
    warnings: set[str] = set()
    rule = IgnoreRule(
        "apps",
        "Deployment",
        json_pointers=("spec/replicas",),
        jq_paths=('.spec.template.spec.containers[] | select(.name == "sidecar")',),
        origin="Application model-server-prod",
    )
    assert trimmed(rule, warnings) == a_deployment()
    assert len(warnings) == 2
    assert all(warning.startswith("Application model-server-prod: ") for warning in warnings)


@pytest.mark.parametrize(
    ("expression", "steps"),
    [
        (".", []),
        (".spec.replicas", [("key", "spec"), ("key", "replicas")]),
        (
            '.metadata.annotations["team/owner"]',
            [("key", "metadata"), ("key", "annotations"), ("key", "team/owner")],
        ),
        (".items[-1]", [("key", "items"), ("index", -1)]),
        (".items[]?.name", [("key", "items"), ("each", None), ("key", "name")]),
        ("spec", None),
        (".items | length", None),
    ],
)
def test_parse_jq_path(expression: str, steps: list[tuple[str, Any]] | None) -> None:
    assert parse_jq_path(expression) == steps


def test_application_rules_belong_to_the_roots_it_deploys_from_this_repository() -> None:
    entry = {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}
    applications = [
        an_application(
            "model-server-prod",
            {
                "sources": [
                    {"repoURL": "https://GitHub.com/example/platform/", "path": "./apps/prod/"},
                    {"repoURL": "https://github.com/other/charts", "path": "charts/x"},
                ],
                "ignoreDifferences": [entry, "not a mapping"],
            },
        ),
        an_application("no-rules", {"source": {"repoURL": REPOSITORY, "path": "apps/dev"}}),
        Resource(
            "clusters/prod",
            {"apiVersion": "v1", "kind": "ConfigMap", "spec": {"ignoreDifferences": [entry]}},
        ),
    ]

    rules = application_ignore_rules(applications, REPOSITORY)

    assert rules == {
        "apps/prod": [
            IgnoreRule(
                "apps",
                "Deployment",
                json_pointers=("/spec/replicas",),
                origin="Application model-server-prod",
            )
        ]
    }


def test_system_rules_come_from_argocd_cm_by_group_and_kind() -> None:
    config_map = Resource(
        "clusters/prod",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm"},
            "data": {
                PREFIX + "apps_Deployment": "jsonPointers:\n- /spec/replicas\n",
                PREFIX + "all": "jqPathExpressions:\n- .metadata.labels\n",
                PREFIX + "Service": "jsonPointers: [/spec/clusterIP]",
                PREFIX + "broken_Kind": "jsonPointers: [unclosed",
                "resource.customizations.health.apps_Deployment": "jsonPointers: [/x]",
            },
        },
    )

    rules = system_ignore_rules([config_map])

    assert [(rule.group, rule.kind, rule.json_pointers, rule.jq_paths) for rule in rules] == [
        ("apps", "Deployment", ("/spec/replicas",), ()),
        ("*", "*", (), (".metadata.labels",)),
        ("", "Service", ("/spec/clusterIP",), ()),
    ]
    assert rules[0].origin == "argocd-cm resource.customizations.ignoreDifferences.apps_Deployment"
    assert rules[1].matches(DEPLOYMENT)
    assert rules[2].matches(ResourceKey("", "Service", "serving", "web"))
    assert not rules[2].matches(DEPLOYMENT)

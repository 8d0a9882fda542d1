"""What a change does to rendered manifests, resource by resource: the fields Argo CD is told to
ignore left out, and a generated name that changed paired with the one it replaced. Masking is
tested in test_secrets, the wording and the size limit in test_report."""

from __future__ import annotations

import json

from mlopsctl.base.resources import Resource
from mlopsctl.diff.ignore_differences import IgnoreRule, parse_jq_path
from mlopsctl.diff.manifests import diff_resources

WEBHOOKS = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingWebhookConfiguration",
    "metadata": {"name": "cnpg"},
    "webhooks": [
        {"name": "a", "clientConfig": {"caBundle": "AAA", "service": {"name": "s"}}},
        {"name": "b", "clientConfig": {"service": {"name": "s"}}},
        {"name": "c", "clientConfig": {"caBundle": "CCC", "service": {"name": "s"}}},
    ],
}


def resources(*bodies: dict) -> list[Resource]:
    return [Resource("root", body) for body in bodies]


def with_bundles(first: str, third: str) -> dict:
    body = json.loads(json.dumps(WEBHOOKS))
    body["webhooks"][0]["clientConfig"]["caBundle"] = first
    body["webhooks"][2]["clientConfig"]["caBundle"] = third
    return body


def test_jq_paths_that_argocd_users_write_are_understood():
    assert parse_jq_path(".webhooks[]?.clientConfig.caBundle") == [
        ("key", "webhooks"),
        ("each", None),
        ("key", "clientConfig"),
        ("key", "caBundle"),
    ]
    assert parse_jq_path('.metadata.annotations["example.com/x"]') == [
        ("key", "metadata"),
        ("key", "annotations"),
        ("key", "example.com/x"),
    ]
    assert parse_jq_path(".spec.containers[0].image") == [
        ("key", "spec"),
        ("key", "containers"),
        ("index", 0),
        ("key", "image"),
    ]
    assert parse_jq_path('.spec.containers[] | select(.name == "x")') is None
    assert parse_jq_path("spec.replicas") is None


def test_a_jq_rule_ignores_the_field_in_every_list_item():
    rule = IgnoreRule(
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        jq_paths=(".webhooks[]?.clientConfig.caBundle",),
    )
    before, after = resources(with_bundles("AAA", "CCC")), resources(with_bundles("XXX", "YYY"))
    assert diff_resources("root", before, after, [rule]).resources == []
    assert len(diff_resources("root", before, after, []).resources) == 1


def test_a_json_pointer_with_escapes_and_a_rule_for_another_name():
    def deployment(value: str) -> dict:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "n", "annotations": {"a/b~c": value}},
        }

    pointer = IgnoreRule("apps", "Deployment", json_pointers=("/metadata/annotations/a~1b~0c",))
    before, after = resources(deployment("1")), resources(deployment("2"))
    assert diff_resources("root", before, after, [pointer]).resources == []
    other = IgnoreRule("apps", "Deployment", name="api", json_pointers=pointer.json_pointers)
    assert len(diff_resources("root", before, after, [other]).resources) == 1


def test_an_expression_beyond_paths_is_compared_and_reported():
    rule = IgnoreRule(
        "admissionregistration.k8s.io",
        "*",
        jq_paths=(".webhooks[] | select(.name == 'a')",),
        origin="Application x",
    )
    result = diff_resources(
        "root", resources(with_bundles("A", "C")), resources(with_bundles("B", "C")), [rule]
    )
    assert len(result.resources) == 1
    assert result.warnings == [
        "Application x: jqPathExpression \".webhooks[] | select(.name == 'a')\" is more than a "
        "path (mlopsctl applies paths like .a.b[]?.c only); the field is compared"
    ]


def configmap(name: str, value: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"k": value},
    }


def test_a_generated_name_change_is_one_changed_object():
    result = diff_resources(
        "root",
        resources(configmap("pin-ch8h87bdck", "1")),
        resources(configmap("pin-hbbt4hd4bc", "2")),
    )
    [change] = result.resources
    assert (change.reference, change.change, change.renamed_from) == (
        "ConfigMap/pin-hbbt4hd4bc",
        "changed",
        "ConfigMap/pin-ch8h87bdck",
    )
    # Two candidates on one side: no guessing, shown as removed and added.
    ambiguous = diff_resources(
        "root",
        resources(configmap("pin-ch8h87bdck", "1")),
        resources(configmap("pin-hbbt4hd4bc", "2"), configmap("pin-kk8h87bdc2", "3")),
    )
    assert sorted(change.change for change in ambiguous.resources) == [
        "added",
        "added",
        "removed",
    ]

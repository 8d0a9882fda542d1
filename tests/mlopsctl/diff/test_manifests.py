"""The pure parts of `mlopsctl diff`: ignore rules, masking, pairing, wording, the size limit."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlopsctl.base import model_review
from mlopsctl.base.resources import Resource
from mlopsctl.diff import report as diff_report
from mlopsctl.diff.ignore_differences import IgnoreRule, parse_jq_path
from mlopsctl.diff.manifests import ResourceDiff, RootDiff, diff_resources
from mlopsctl.diff.secrets import mask_secrets

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


def test_secret_masks_tell_changed_from_unchanged_and_never_show_values():
    before = {"kind": "Secret", "data": {"a": "b2xk", "same": "c2FtZQ=="}}
    after = {"kind": "Secret", "data": {"a": "bmV3", "same": "c2FtZQ==", "added": "eA=="}}
    masked_before, masked_after = mask_secrets(before, after)
    assert masked_before == {
        "kind": "Secret",
        "data": {"a": "<masked: old value>", "same": "<masked>"},
    }
    assert masked_after == {
        "kind": "Secret",
        "data": {"a": "<masked: new value>", "same": "<masked>", "added": "<masked>"},
    }
    assert before["data"]["a"] == "b2xk"  # the inputs are not modified
    # Data that is not a mapping is masked whole.
    assert mask_secrets({"kind": "Secret", "data": "c2VjcmV0"}, None)[0] == {
        "kind": "Secret",
        "data": "<masked>",
    }


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


def signature(*columns: tuple[str, str]) -> dict:
    return {"inputs": json.dumps([{"name": name, "type": kind} for name, kind in columns])}


def test_signature_verdicts():
    def verdict(old: dict | None, new: dict | None, known: bool = True) -> str:
        return model_review.signature_verdict(
            model_review.VersionFacts("1", signature=old, signature_known=known),
            model_review.VersionFacts("2", signature=new, signature_known=known),
        )

    same = signature(("x", "double"))
    assert verdict(same, same) == "unchanged"
    assert verdict(None, same) == "**added** (v1 had none)"
    assert verdict(same, None) == "**removed** (v2 has none)"
    assert verdict(same, same, known=False).startswith("unknown")
    assert (
        verdict(
            signature(("x", "double"), ("y", "double")), signature(("x", "long"), ("z", "double"))
        )
        == "**changed**: inputs: +`z`, -`y`, `x` double → long"
    )


def test_metric_rows_show_deltas_and_gaps():
    before = model_review.VersionFacts("3", metrics={"accuracy": 0.9, "loss": 0.3})
    after = model_review.VersionFacts("5", metrics={"accuracy": 0.95, "f1": 0.9})
    assert model_review.metric_rows(before, after) == [
        ("accuracy", "0.9", "0.95", "+0.05"),
        ("f1", "-", "0.9", "-"),
        ("loss", "0.3", "-", "-"),
    ]


def _report(sizes: list[list[int]]) -> diff_report.DiffReport:
    roots = [
        RootDiff(
            f"overlays/env-{index}/app",
            "changed",
            [
                ResourceDiff(
                    f"ConfigMap/ns/c{number}",
                    "changed",
                    "--- a\n+++ b\n" + "".join(f"+line {n} ```\n" for n in range(size)),
                )
                for number, size in enumerate(root_sizes)
            ],
        )
        for index, root_sizes in enumerate(sizes)
    ]
    return diff_report.DiffReport("main (a)", "pr (b)", roots, [], ["f"])


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.lists(st.integers(0, 3000), min_size=1, max_size=5), min_size=1, max_size=6),
    limit=st.integers(2_000, 70_000),
)
def test_markdown_never_exceeds_the_limit_and_keeps_the_summary(sizes, limit):
    report = _report(sizes)
    comment, cut = diff_report.markdown(report, limit, "full.diff")
    assert len(comment) <= limit
    assert comment.count("<details>") == comment.count("</details>")
    summary = diff_report.markdown_summary(report)
    if len(summary) < limit - 400:
        assert comment.startswith(summary)
    whole, _ = diff_report.markdown(report, 10**9)
    assert cut == (whole != comment)
    if cut:
        assert "full.diff" in comment
    # Backticks in a diff never close its fence early.
    if "+line 0 ```" in comment:
        assert "````diff" in comment


def _resources(*specs: tuple[str, str, int], width: int = 40) -> diff_report.DiffReport:
    """One root with a resource per (reference, change, lines of diff)."""
    resources = [
        ResourceDiff(
            reference,
            change,
            "--- a\n+++ b\n" + "".join(f"+  line {n}: {'x' * width}\n" for n in range(lines)),
        )
        for reference, change, lines in specs
    ]
    root = RootDiff("overlays/local/app", "changed", resources)
    return diff_report.DiffReport("main (a)", "pr (b)", [root], [], ["f"])


def test_small_diffs_are_never_cut_to_make_room_for_a_large_one():
    report = _resources(
        ("ConfigMap/ns/dashboards", "added", 5000),
        ("Deployment/ns/web", "changed", 12),
        ("Secret/ns/keys", "added", 3),
    )
    comment, cut = diff_report.markdown(report, 20_000, "full.diff")
    assert cut and len(comment) <= 20_000
    assert "line 11:" in comment.split("Deployment/ns/web changed", 1)[1]  # whole
    assert "line 2:" in comment.split("Secret/ns/keys added", 1)[1]
    assert "lines left out here" in comment.split("ConfigMap/ns/dashboards added", 1)[1]
    assert comment.count("lines left out here") == 1


def test_five_hundred_small_resources_all_appear():
    report = _resources(
        *((f"ConfigMap/ns/c{index}", "changed", 2) for index in range(500)), width=5
    )
    comment, cut = diff_report.markdown(report)
    assert not cut and len(comment) <= diff_report.GITHUB_COMMENT_LIMIT
    for index in range(500):
        assert f"ConfigMap/ns/c{index} changed**" in comment
    assert comment.count("line 1: ") == 500


def test_five_hundred_longer_ones_each_keep_their_first_lines():
    report = _resources(
        *((f"ConfigMap/ns/c{index}", "changed", 6) for index in range(500)), width=5
    )
    comment, cut = diff_report.markdown(report)
    assert cut and len(comment) <= diff_report.GITHUB_COMMENT_LIMIT
    assert comment.count("line 0: ") == 500
    assert comment.count("lines left out here._") == 500  # the where is said once, at the end
    assert "all 500 resource diffs are here, the longest shortened; run `mlopsctl diff`" in comment


def test_when_not_one_line_each_fits_the_resources_are_listed_by_name():
    report = _resources(*((f"ConfigMap/ns/c{index}", "changed", 30) for index in range(500)))
    comment, cut = diff_report.markdown(report, 40_000, "full.diff")
    assert cut and len(comment) <= 40_000
    assert "| `overlays/local/app` | ConfigMap/ns/c499 | changed | 30 |" in comment
    assert "listed by name; the full diff is in `full.diff`" in comment


@pytest.mark.parametrize(
    ("reference", "change", "diff", "category"),
    [
        (
            "Deployment/ns/web",
            "changed",
            "-  image: a:1\n+  image: a:latest\n",
            "Model pins and images",
        ),
        (
            "ConfigMap/ns/pin",
            "changed",
            "-  URI: models:/m/1\n+  URI: models:/m/2\n",
            "Model pins and images",
        ),
        ("Deployment/ns/web", "removed", "-kind: Deployment\n", "Removed"),
        ("Secret/ns/keys", "added", "+data: <masked>\n", "Secrets"),
        ("RoleBinding/ns/r", "added", "+kind: RoleBinding\n", "RBAC and NetworkPolicies"),
        ("NetworkPolicy/ns/n", "changed", "-  port: 1\n+  port: 2\n", "RBAC and NetworkPolicies"),
        ("Deployment/ns/web", "added", "+  image: a:1\n", "Workloads"),
        ("Service/ns/s", "changed", "-  port: 1\n+  port: 2\n", "Other resources"),
        (
            "CustomResourceDefinition.apiextensions.k8s.io/x",
            "added",
            "+kind: X\n",
            "Large generated data",
        ),
        ("ConfigMap/ns/dashboards", "added", "+  k: v\n" * 300, "Large generated data"),
    ],
)
def test_what_a_reviewer_must_see_first(reference, change, diff, category):
    assert diff_report.category(ResourceDiff(reference, change, diff)) == category

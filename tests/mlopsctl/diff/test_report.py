"""`mlopsctl diff`'s report as a terminal, a pull-request comment and a program read it: what is
said about each root, the exit code, and the comment kept under GitHub's size limit without
hiding a changed resource."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlopsctl.base.resources import Resource
from mlopsctl.diff import report as diff_report
from mlopsctl.diff.manifests import ResourceDiff, RootDiff, diff_resources


def configmap(name: str, value: str) -> Resource:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"}}
    return Resource("overlays/local/app", {**body, "data": {"colour": value}})


def changed_root() -> RootDiff:
    """A real comparison: one ConfigMap changed, one added, one whose generated name changed."""
    return diff_resources(
        "overlays/local/app",
        [configmap("settings", "blue"), configmap("pin-ch8h87bdck", "1")],
        [
            configmap("settings", "green"),
            configmap("extra", "x"),
            configmap("pin-hbbt4hd4bc", "2"),
        ],
    )


def test_text_says_each_changed_root_and_hides_the_unchanged_ones():
    report = diff_report.DiffReport(
        "main (1a2b3c)",
        "working tree",
        [changed_root(), RootDiff("overlays/staging/app", "unchanged")],
        [],
        ["overlays/local/app/settings.yaml"],
    )
    said = diff_report.text(report)
    lines = said.splitlines()
    assert lines[0] == "mlopsctl diff: main (1a2b3c) -> working tree"
    assert lines[1] == (
        "1 file changed; 2 kustomize roots read them; resources: 1 added, 2 changed, 0 removed"
    )
    assert "=== overlays/local/app: 1 added, 2 changed, 0 removed" in lines
    assert "overlays/staging/app" not in said
    assert (
        "--- ConfigMap/ns/pin-hbbt4hd4bc changed (generated name, was ConfigMap/ns/pin-ch8h87bdck)"
        in lines
    )
    assert "-  colour: blue" in lines and "+  colour: green" in lines
    assert diff_report.exit_code(report) == 1


def test_text_without_changes_says_so_and_exits_0():
    report = diff_report.DiffReport(
        "main (a)", "pr (b)", [RootDiff("base/app", "unchanged")], [], []
    )
    said = diff_report.text(report)
    assert said.endswith("\nno change to any rendered resource\n")
    assert "0 files changed; 1 kustomize root reads them" in said
    assert diff_report.exit_code(report) == 0


def test_a_root_that_does_not_render_is_an_error_and_one_not_rendered_is_a_change():
    broken = RootDiff("overlays/local/app", "error", message="does not render: missing.yaml")
    offline = RootDiff("clusters/local/argocd", "not rendered", message="needs the network")
    with_error = diff_report.DiffReport("a", "b", [broken], [], ["x"])
    said = diff_report.text(with_error)
    assert "=== overlays/local/app: error: does not render: missing.yaml" in said
    assert "no change to any rendered resource" not in said
    assert diff_report.exit_code(with_error) == 2
    # A root that could not be compared is not passed off as unchanged.
    assert diff_report.exit_code(diff_report.DiffReport("a", "b", [offline], [], ["x"])) == 1


def test_long_resource_diffs_are_cut_in_text_only_when_asked():
    lines = "".join(f"+  line {number}\n" for number in range(10))
    root = RootDiff("app", "changed", [ResourceDiff("ConfigMap/ns/big", "added", lines)])
    report = diff_report.DiffReport("a", "b", [root], [], ["x"])
    assert "+  line 9" in diff_report.text(report)
    cut = diff_report.text(report, max_lines_per_resource=3)
    assert "+  line 2" in cut and "+  line 3" not in cut
    assert "... 7 of 10 lines left out (--max-lines-per-resource)" in cut


def test_json_carries_every_root_with_its_counts_and_diffs():
    report = diff_report.DiffReport(
        "main (a)", "pr (b)", [changed_root(), RootDiff("base/app", "unchanged")], [], ["f"]
    )
    document = json.loads(diff_report.as_json(report))
    assert (document["base"], document["head"], document["changed"], document["errors"]) == (
        "main (a)",
        "pr (b)",
        True,
        False,
    )
    assert document["changedFiles"] == ["f"]
    local, base = document["roots"]
    assert (local["root"], local["added"], local["changed"], local["removed"]) == (
        "overlays/local/app",
        1,
        2,
        0,
    )
    renamed = [item for item in local["resources"] if item["renamedFrom"]]
    assert [item["renamedFrom"] for item in renamed] == ["ConfigMap/ns/pin-ch8h87bdck"]
    # JSON is for programs: unchanged roots are listed too.
    assert (base["root"], base["status"], base["resources"]) == ("base/app", "unchanged", [])
    assert document["models"] == []


def test_the_comment_summary_escapes_what_would_break_its_table_or_its_html():
    root = RootDiff(
        "overlays/local/app",
        "error",
        message="does not render: <nil> | pipe",
        warnings=["Application x: a <b> | c"],
    )
    summary = diff_report.markdown_summary(diff_report.DiffReport("a", "b", [root], [], ["f"]))
    assert summary.startswith(diff_report.COMMENT_MARKER + "\n")
    assert "| `overlays/local/app` | error | 0 | 0 | 0 |" in summary
    assert "- `overlays/local/app`: error: does not render: &lt;nil&gt; \\| pipe" in summary
    assert "- `overlays/local/app`: Application x: a &lt;b&gt; \\| c" in summary


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

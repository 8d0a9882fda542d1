"""The kubeconform path of `validate`: the real kubeconform that `mlopsctl tools install` builds
(v0.8.0), reading the Kubernetes 1.35 schemas offline (made standalone from kubernetes-validate's)
and the project's schemas for custom kinds. Its report becomes findings with the same field paths
as the other checker's."""

from __future__ import annotations

from pathlib import Path

from mlopsctl.base import toolchain
from mlopsctl.validate.schemas.store import kubeconform_problems, kubeconform_schema_dir
from tests.support.paths import TOOLS_DIR
from tests.support.workload_fixture import good_deployment, write_fixture


def test_validate_uses_the_pinned_kubeconform(cli, tmp_path: Path):
    deployment = good_deployment()
    deployment["spec"]["replicas"] = "two"
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    result = cli(
        "validate", "--repo", str(write_fixture(tmp_path, [deployment])), "--format", "json"
    )
    report = result.json()
    assert report["schema_checker"] == (
        f"kubeconform ({TOOLS_DIR / 'bin' / 'kubeconform'}) + project schemas"
    )
    schema = {(f["field"], f["message"]) for f in report["findings"] if f["check"] == "schema"}
    assert schema == {
        ("spec.replicas", "got string, want null or integer"),
        (
            "spec.template.spec.containers[0]",
            "additional properties 'imagePullPolicyy' not allowed",
        ),
    }


def test_the_schemas_are_read_offline_from_a_directory_made_once(tmp_path: Path):
    root = kubeconform_schema_dir("1.35", tmp_path)
    directory = root / "v1.35.0-standalone-strict"
    assert (directory / "deployment-apps-v1.json").is_file()
    text = (directory / "deployment-apps-v1.json").read_text()
    assert "/api/_definitions.json" not in text  # standalone: every reference is inside the file
    assert kubeconform_schema_dir("1.35", tmp_path) == root  # not rebuilt


def test_each_roots_problems_stay_with_that_root(tmp_path: Path):
    kubeconform = toolchain.resolve(TOOLS_DIR).kubeconform
    assert kubeconform is not None
    good = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n"
    bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: 1\n"
    found = kubeconform_problems(kubeconform, "1.35", {"overlays/a": good, "overlays/b": bad})
    assert list(found) == [("overlays/b", "ConfigMap", "settings")]
    [problem] = found[("overlays/b", "ConfigMap", "settings")]
    assert problem.field == "data.a"

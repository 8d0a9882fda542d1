"""mlopsctl.validate.engine: `validate`'s phases over real renders (the pinned kustomize), and
promotion's validator. Which checker reads the schemas (the real kubeconform, or the same strict
schemas in this process for a few resources) changes neither the findings' fields nor their
files; an edit is judged by the roots it touches only; a root that needs the network is set
aside, not failed. What each check finds is tested in the checks' own modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mlopsctl.base import toolchain
from mlopsctl.base.config import load_config
from mlopsctl.validate.engine import edit_findings, validate
from tests.support.paths import TOOLS_DIR
from tests.support.trees import MINIMAL_CONFIG, write_tree
from tests.support.workload_fixture import good_deployment, write_fixture

KUBECONFORM = f"kubeconform ({TOOLS_DIR / 'bin' / 'kubeconform'}) + project schemas"
IN_PROCESS = "kubernetes-validate strict schemas for Kubernetes 1.35 + project schemas"


def broken_deployment() -> dict[str, Any]:
    deployment = good_deployment()
    deployment["spec"]["replicas"] = "two"
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    return deployment


def test_validate_uses_the_pinned_kubeconform(cli, tmp_path: Path):
    result = cli(
        "validate",
        "--repo",
        str(write_fixture(tmp_path, [broken_deployment()])),
        "--format",
        "json",
    )
    report = result.json()
    assert report["schema_checker"] == KUBECONFORM
    schema = {(f["field"], f["message"]) for f in report["findings"] if f["check"] == "schema"}
    assert schema == {
        ("spec.replicas", "got string, want null or integer"),
        (
            "spec.template.spec.containers[0]",
            "additional properties 'imagePullPolicyy' not allowed",
        ),
    }


def test_both_schema_checkers_find_the_same_fields_in_the_same_files(tmp_path: Path):
    """Promotion checks its few resources in this process; CI runs kubeconform on the tree.
    A finding must read the same, field and file, whichever ran."""
    settings = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "shop"},
        "data": {"feature/flag": 1},  # a key with a slash: JSON pointers escape it
    }
    repository = write_fixture(tmp_path, [broken_deployment(), settings])
    config = load_config(repository)
    tools = toolchain.resolve(TOOLS_DIR)

    by_kubeconform = validate(repository, config, ["web"], tools, in_process_up_to=0)
    in_process = validate(repository, config, ["web"], tools, in_process_up_to=50)

    assert (by_kubeconform.schema_checker, in_process.schema_checker) == (KUBECONFORM, IN_PROCESS)

    def schema_fields(report: Any) -> set[tuple[str, str, str]]:
        return {(f.file, f.resource, f.field) for f in report.findings if f.check == "schema"}

    assert (
        schema_fields(by_kubeconform)
        == schema_fields(in_process)
        == {
            ("web/workload.yaml", "Deployment/shop/web", "spec.replicas"),
            ("web/workload.yaml", "Deployment/shop/web", "spec.template.spec.containers[0]"),
            ("web/workload.yaml", "ConfigMap/shop/settings", "data.feature/flag"),
        }
    )


def test_an_edit_is_judged_by_the_roots_it_touches_only(tmp_path: Path):
    """A promotion must not be held up by a problem elsewhere in the tree, nor let one through
    in the roots its edit renders."""
    unchanged = yaml.safe_dump(good_deployment(), sort_keys=False)
    repository = write_tree(
        tmp_path,
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "edited/kustomization.yaml": "resources:\n  - workload.yaml\n",
            "edited/workload.yaml": yaml.safe_dump(broken_deployment(), sort_keys=False),
            "elsewhere/kustomization.yaml": "resources:\n  - workload.yaml\n",
            "elsewhere/workload.yaml": unchanged.replace(
                "registry.example.test/web:1.2.3", "registry.example.test/web:latest"
            ),
            # A tree-wide problem: a kustomization field kustomize v5 has deprecated.
            "old/kustomization.yaml": "bases:\n  - ../elsewhere\n",
        },
    )
    config = load_config(repository)
    tools = toolchain.resolve(TOOLS_DIR)
    whole_tree = validate(repository, config, ["edited", "elsewhere", "old"], tools)
    assert {finding.file for finding in whole_tree.findings} >= {
        "edited/workload.yaml",
        "elsewhere/workload.yaml",
        "old/kustomization.yaml",
    }

    lines = edit_findings(repository, config, ["edited"], tools)

    assert sorted(lines) == [
        "edited/workload.yaml: Deployment/shop/web: spec.replicas: "
        "'two' is not of type 'integer', 'null'",
        "edited/workload.yaml: Deployment/shop/web: spec.template.spec.containers[0]: "
        "Additional properties are not allowed ('imagePullPolicyy' was unexpected)",
    ]
    [line] = edit_findings(repository, config, ["elsewhere"], tools)
    assert line.startswith(
        "elsewhere/workload.yaml: Deployment/shop/web: spec.template.spec.containers[0].image: "
    )
    assert "mutable tag 'latest'" in line


def test_a_root_that_needs_the_network_is_set_aside_not_failed(tmp_path: Path):
    repository = write_fixture(tmp_path, [good_deployment()])
    write_tree(
        repository,
        {
            "remote/kustomization.yaml": (
                "resources:\n  - https://example.test/manifests/install.yaml\n"
            )
        },
    )
    config = load_config(repository)

    report = validate(repository, config, ["web", "remote"], toolchain.resolve(TOOLS_DIR))

    assert report.findings == []
    assert list(report.network_roots) == ["remote"]
    assert "https://example.test/manifests/install.yaml" in " ".join(report.network_roots["remote"])
    assert report.resources_checked == 1  # web's Deployment; nothing of the remote root

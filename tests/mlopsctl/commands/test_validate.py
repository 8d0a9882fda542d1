"""`mlopsctl validate`'s own flags and output: the counts it ends with, JSON for programs, and
what it refuses before validating (a kubeconfig it cannot read for --server). What each check
finds is tested in tests/mlopsctl/validate/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.cli import CliResult
from tests.support.paths import REPOSITORY
from tests.support.workload_fixture import good_deployment, write_fixture


def unlabelled() -> dict[str, Any]:
    deployment = good_deployment()
    del deployment["metadata"]["labels"]["app.kubernetes.io/part-of"]
    return deployment


def test_a_clean_tree_exits_0_and_says_what_was_checked(
    cli: Callable[..., CliResult], tmp_path: Path
):
    result = cli("validate", "--repo", str(write_fixture(tmp_path, [good_deployment()])))
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr.startswith("0 finding(s) in 1 roots, 1 resources; schemas: kubeconform")


def test_a_finding_exits_1_and_json_carries_it_with_the_counts(
    cli: Callable[..., CliResult], tmp_path: Path
):
    repository = write_fixture(tmp_path, [unlabelled()])
    text = cli("validate", "--repo", str(repository))
    assert text.exit_code == 1
    assert "web/workload.yaml: Deployment/shop/web: metadata.labels" in text.stdout
    assert "1 finding(s) in 1 roots, 1 resources" in text.stderr
    document = cli("validate", "--repo", str(repository), "--format", "json")
    assert document.exit_code == 1
    report = document.json()
    assert (report["resources_checked"], report["roots"]) == (1, ["web"])
    [finding] = report["findings"]
    assert "app.kubernetes.io/part-of" in finding["message"]


def test_a_kubeconfig_it_cannot_read_stops_server_validation_before_it_starts(
    cli: Callable[..., CliResult], tmp_path: Path
):
    missing = tmp_path / "kubeconfig"
    result = cli(
        "validate",
        "--repo",
        str(write_fixture(tmp_path / "repository", [good_deployment()])),
        "--server",
        "--kubeconfig",
        str(missing),
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(f"mlopsctl: error: {missing}: cannot read the kubeconfig")
    assert "finding(s)" not in result.stderr


def test_another_format_is_a_usage_error(cli: Callable[..., CliResult]):
    result = cli("validate", "--repo", str(REPOSITORY), "--format", "sarif")
    assert result.exit_code == 2
    assert "argument --format: invalid choice: 'sarif'" in result.stderr


def test_a_schema_directory_that_does_not_exist_is_refused(
    cli: Callable[..., CliResult], tmp_path: Path
):
    missing = tmp_path / "schemas"
    repository = write_fixture(tmp_path / "repository", [good_deployment()])
    result = cli("validate", "--repo", str(repository), "--schema-dir", str(missing))
    assert result.exit_code == 2
    assert str(missing) in result.stderr

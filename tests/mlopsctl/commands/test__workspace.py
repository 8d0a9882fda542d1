"""The repository a command works on: found from --repo or the working directory, its ROOT
arguments checked to be kustomize roots inside it, its --env checked against mlopsctl.yaml,
each refusal naming what is wrong before anything runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import CliResult
from tests.support.paths import REPOSITORY
from tests.support.trees import MINIMAL_CONFIG, write_tree

PIN = (
    "configMapGenerator:\n  - name: pin\n    literals:\n"
    "      # mlopsctl: model iris@champion\n      - MODEL_URI=models:/iris/4\n"
)


def test_outside_a_platform_repository_says_so(cli, tmp_path: Path):
    result = cli("validate", "--repo", str(tmp_path))
    assert result.exit_code == 2
    assert "no mlopsctl.yaml" in result.stderr


def test_root_argument_outside_the_repository_is_refused(cli, tmp_path: Path):
    repository = write_tree(tmp_path / "repo", {"mlopsctl.yaml": MINIMAL_CONFIG})
    result = cli("render", "--repo", str(repository), str(tmp_path))
    assert result.exit_code == 2
    assert "outside the repository" in result.stderr


def test_root_argument_without_kustomization_is_refused(cli, tmp_path: Path):
    repository = write_tree(tmp_path / "repo", {"mlopsctl.yaml": MINIMAL_CONFIG, "empty/x": ""})
    result = cli("render", "--repo", str(repository), str(repository / "empty"))
    assert result.exit_code == 2
    assert "no kustomization.yaml" in result.stderr


def test_an_unknown_environment_is_refused_before_anything_runs(cli):
    for command in ("status", "promote"):
        result = cli(
            command, "--repo", str(REPOSITORY), "--env", "qa", "--mlflow-uri", "http://127.0.0.1:9"
        )
        assert result.exit_code == 2
        assert "--env 'qa' is not one of ['local', 'staging', 'production']" in result.stderr


def test_without_repo_the_nearest_directory_with_mlopsctl_yaml_is_used(
    cli: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    repository = write_tree(
        tmp_path / "repository",
        {"mlopsctl.yaml": MINIMAL_CONFIG, "overlays/local/app/kustomization.yaml": PIN},
    )
    monkeypatch.chdir(repository / "overlays" / "local")
    result = cli("pins", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [(pin["file"], pin["value"]) for pin in result.json()] == [
        ("overlays/local/app/kustomization.yaml", "4")
    ]


def test_a_relative_root_is_read_from_the_working_directory(
    cli: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    repository = write_tree(
        tmp_path / "repository",
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "overlays/local/app/kustomization.yaml": PIN,
            "overlays/staging/app/kustomization.yaml": PIN,
        },
    )
    monkeypatch.chdir(repository / "overlays" / "local")
    result = cli("render", "app")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("# mlopsctl render: overlays/local/app\n")
    assert "overlays/staging" not in result.stdout

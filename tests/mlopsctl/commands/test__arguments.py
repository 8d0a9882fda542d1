"""The flags several commands share: --mlflow-uri (else $MLFLOW_TRACKING_URI), --remote (else
promotion.remote, else the repository's URL) and --max-attempts, and how a landing is set up
from them. A missing or bad value is refused with the flag named, before any clone or call."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from mlopsctl.base.config import load_config
from mlopsctl.base.mirror import mirrors_directory
from mlopsctl.commands._arguments import landing, remote_of
from mlopsctl.commands._workspace import Workspace
from tests.support.cli import CliResult
from tests.support.paths import TOOLS_DIR
from tests.support.trees import MINIMAL_CONFIG, write_tree

SECRET = "a-webhook-secret-for-tests"


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "repository", {"mlopsctl.yaml": MINIMAL_CONFIG})


def space_of(repository: Path) -> Workspace:
    return Workspace(repository, load_config(repository), TOOLS_DIR)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("0", "argument --max-attempts: must be 1 or more, not 0"),
        ("-2", "argument --max-attempts: must be 1 or more, not -2"),
        ("many", "argument --max-attempts: invalid positive_integer value: 'many'"),
    ],
)
@pytest.mark.parametrize("command", ["promote", "set-image", "rollback", "serve"])
def test_max_attempts_below_one_is_refused_by_every_command_that_pushes(
    cli: Callable[..., CliResult], repository: Path, command: str, value: str, said: str
):
    required = {
        "promote": [],
        "set-image": ["app", "1.0.0"],
        "rollback": ["--env", "local", "--model", "iris"],
        "serve": [],
    }[command]
    repo = [] if command == "serve" else ["--repo", str(repository)]
    result = cli(command, *required, *repo, "--max-attempts", value)
    assert result.exit_code == 2
    assert said in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["promote"],
        ["rollback", "--env", "local", "--model", "iris"],
        ["status"],
        ["webhook", "register", "--url", "http://127.0.0.1:9/webhooks/mlflow"],
    ],
    ids=["promote", "rollback", "status", "webhook"],
)
def test_without_an_mlflow_server_each_command_says_how_to_give_one(
    cli: Callable[..., CliResult],
    repository: Path,
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", SECRET)
    repo = [] if arguments[0] == "webhook" else ["--repo", str(repository)]
    result = cli(*arguments, *repo)
    assert result.exit_code == 2
    assert result.stderr == (
        "mlopsctl: error: no MLflow server: pass --mlflow-uri or set MLFLOW_TRACKING_URI\n"
    )


def test_mlflow_tracking_uri_is_the_default_server(
    cli: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    repository = write_tree(
        tmp_path / "repository",
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "overlays/local/app/kustomization.yaml": (
                "configMapGenerator:\n  - name: pin\n    literals:\n"
                "      # mlopsctl: model iris@champion\n      - MODEL_URI=models:/iris/3\n"
            ),
        },
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # one refused attempt is enough
    result = cli("status", "--repo", str(repository))
    assert result.exit_code == 3
    assert "MLflow at http://127.0.0.1:9 is unreachable" in result.stderr


def test_the_remote_is_the_flag_else_promotion_remote_else_the_repository_url(tmp_path: Path):
    plain = write_tree(tmp_path / "plain", {"mlopsctl.yaml": MINIMAL_CONFIG})
    configured = write_tree(
        tmp_path / "configured",
        {
            "mlopsctl.yaml": MINIMAL_CONFIG
            + "promotion:\n  remote: git@example.test:platform.git\n"
            + "  environments:\n    local:\n      mode: commit\n"
        },
    )
    no_flag = argparse.Namespace(remote=None)
    assert remote_of(no_flag, space_of(plain)) == "https://example.test/platform.git"
    assert remote_of(no_flag, space_of(configured)) == "git@example.test:platform.git"
    flag = argparse.Namespace(remote="/srv/git/platform.git")
    assert remote_of(flag, space_of(configured)) == "/srv/git/platform.git"


def test_a_landing_dry_runs_only_when_asked_and_opens_pull_requests_only_with_a_token(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    # rollback has no --dry-run flag: its namespace lacks the attribute.
    without_flag = landing(
        argparse.Namespace(max_attempts=7, mirror_dir=None), "/srv/git/platform.git"
    )
    assert (without_flag.dry_run, without_flag.max_attempts) == (False, 7)
    assert without_flag.pull_requests is None
    dry = landing(
        argparse.Namespace(max_attempts=1, dry_run=True, mirror_dir=None), "/srv/git/platform.git"
    )
    assert dry.dry_run
    monkeypatch.setenv("GITHUB_TOKEN", "token")
    with_token = landing(
        argparse.Namespace(max_attempts=1, mirror_dir=None),
        "https://github.com/example-org/mlops-platform.git",
    )
    assert with_token.pull_requests is not None


def test_a_github_token_for_a_remote_that_is_not_github_is_refused_before_any_clone(
    cli: Callable[..., CliResult], repository: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("GITHUB_TOKEN", "token")
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    remote = str(repository.parent / "missing.git")
    result = cli(
        "promote", "--repo", str(repository), "--remote", remote, "--mlflow-uri", "http://x.test"
    )
    assert result.exit_code == 2
    assert f"GITHUB_TOKEN is set but {remote!r} is not a github.com remote" in result.stderr
    assert "set GITHUB_REPOSITORY" in result.stderr
    assert "cannot clone" not in result.stderr


def test_a_landing_keeps_its_mirror_where_asked_or_clones_afresh_with_none(tmp_path: Path):
    assert (
        landing(
            argparse.Namespace(max_attempts=1, mirror_dir=str(tmp_path)), "/srv/git/platform.git"
        ).mirrors
        == tmp_path
    )
    assert (
        landing(argparse.Namespace(max_attempts=1, mirror_dir="none"), "/srv/git/p.git").mirrors
        is None
    )
    assert (
        landing(
            argparse.Namespace(max_attempts=1, mirror_dir=None), "/srv/git/platform.git"
        ).mirrors
        == mirrors_directory()
    )

"""`mlopsctl status`'s own checks and edges: --record-deployments only with --live and --env,
--live reads the branch Argo CD follows (so it needs a git checkout that has it), and a
repository without pins asks MLflow nothing. The rows themselves, against a real MLflow and
kube-apiserver, are tested in tests/mlopsctl/promote/test_status_rows.py and
test_status_live.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.cli import CliResult
from tests.support.paths import REPOSITORY
from tests.support.platform_fixtures import commit_all, git
from tests.support.trees import MINIMAL_CONFIG, write_tree

# Nothing answers there: a command that called MLflow would end with exit code 3.
NOBODY = "http://127.0.0.1:9"
PIN = (
    "configMapGenerator:\n  - name: pin\n    literals:\n"
    "      # mlopsctl: model iris@champion\n      - MODEL_URI=models:/iris/3\n"
)


def test_record_deployments_needs_live(cli):
    result = cli(
        "status",
        "--repo",
        str(REPOSITORY),
        "--mlflow-uri",
        NOBODY,
        "--record-deployments",
    )
    assert result.exit_code != 0
    assert "--record-deployments needs --live" in result.stderr
    no_environment = cli(
        "status",
        "--repo",
        str(REPOSITORY),
        "--mlflow-uri",
        NOBODY,
        "--live",
        "--record-deployments",
    )
    assert no_environment.exit_code != 0
    assert "and --env (the environment whose registry --mlflow-uri is)" in no_environment.stderr


def test_a_repository_without_pins_is_in_step_without_asking_mlflow(
    cli: Callable[..., CliResult], tmp_path: Path
):
    repository = write_tree(tmp_path, {"mlopsctl.yaml": MINIMAL_CONFIG})
    table = cli("status", "--repo", str(repository), "--mlflow-uri", NOBODY)
    assert (table.exit_code, table.stderr) == (0, "")
    assert table.stdout.split() == [
        "ENVIRONMENT",
        "MODEL",
        "ALIAS",
        "GIT",
        "MLFLOW",
        "STATE",
        "RUN",
        "FILES",
    ]
    listed = cli("status", "--repo", str(repository), "--mlflow-uri", NOBODY, "--format", "json")
    assert listed.json() == {"pins": [], "registry_calls": 0}


def test_live_status_outside_a_git_checkout_says_it_needs_one(
    cli: Callable[..., CliResult], tmp_path: Path
):
    repository = write_tree(
        tmp_path, {"mlopsctl.yaml": MINIMAL_CONFIG, "overlays/local/app/kustomization.yaml": PIN}
    )
    result = cli("status", "--repo", str(repository), "--mlflow-uri", NOBODY, "--live")
    # A usage problem (2), not the git remote failing (4): no remote was asked anything.
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "mlopsctl: error: --live reads the pins and their commits from main, the branch Argo CD "
        f"follows, in the git history of --repo: {repository} is not inside a git repository\n"
    )


def test_live_status_in_a_checkout_without_the_followed_branch_names_it(
    cli: Callable[..., CliResult], tmp_path: Path
):
    repository = write_tree(
        tmp_path, {"mlopsctl.yaml": MINIMAL_CONFIG, "overlays/local/app/kustomization.yaml": PIN}
    )
    git(repository, "init", "--quiet", "--initial-branch=trunk")
    commit_all(repository, "platform")
    result = cli("status", "--repo", str(repository), "--mlflow-uri", NOBODY, "--live")
    assert (result.exit_code, result.stdout) == (2, "")
    assert "from main, the branch Argo CD follows" in result.stderr
    assert f"revision 'main' does not name a commit in {repository}" in result.stderr


def test_another_format_is_a_usage_error(cli: Callable[..., CliResult]):
    result = cli("status", "--repo", str(REPOSITORY), "--format", "csv")
    assert result.exit_code == 2
    assert "argument --format: invalid choice: 'csv'" in result.stderr

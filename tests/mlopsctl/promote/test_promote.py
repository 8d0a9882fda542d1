"""Promotion from a real MLflow registry into a real bare git remote."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from mlopsctl.base.config import load_config
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.promote.gates import refusals, uncompared
from tests.support.mlflow_fixtures import MlflowServer
from tests.support.paths import REPOSITORY
from tests.support.platform_fixtures import Platform, git, start_pinned_at

# Every test here runs against MLflow on sqlite and on a real PostgreSQL server.
pytestmark = pytest.mark.parametrize("mlflow_server", ["sqlite", "postgresql"], indirect=True)


def promote(cli, platform: Platform, server: MlflowServer, *extra: str):
    return platform.command(cli, "promote", server.url, *extra)


def test_the_first_promotion_moves_a_pin_of_0_and_never_asks_mlflow_for_version_0(
    cli, platform, mlflow_server
):
    first = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    assert platform.pin("local") == "0"  # committed: nothing promoted yet
    result = promote(cli, platform, mlflow_server, "--env", "local")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert platform.log()[0] == f"promote(local): {platform.model} v0 -> v{first}"
    assert platform.pin("local") == first
    frontend = platform.show("overlays/local/streamlit/kustomization.yaml")
    assert f"MODEL_URI=models:/{platform.model}/{first}" in frontend
    assert platform.trailers()["Previous-Version"] == "0"
    body = git(platform.remote, "log", "-1", "--format=%b", "main")
    assert "accuracy: 0.95 (-)" in body  # nothing before it to compare with
    log = mlflow_server.log.read_text()
    assert f"registered-models/alias?name={platform.model}&alias=challenger" in log  # logged
    assert f"model-versions/get?name={platform.model}&version=0" not in log


def test_local_gets_one_commit_with_trailers_and_a_second_run_makes_none(
    cli, platform, mlflow_server
):
    mlflow_server.register(platform.model, {"accuracy": 0.91})
    start_pinned_at(platform, "1")
    second = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    result = promote(cli, platform, mlflow_server, "--env", "local")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert platform.log()[0] == f"promote(local): {platform.model} v1 -> v{second}"
    assert platform.pin("local") == second
    assert platform.pin("staging") == "1"  # another environment is left alone
    # The frontend's pin follows the same alias: the same commit moved it, said once.
    frontend = platform.show("overlays/local/streamlit/kustomization.yaml")
    assert f"MODEL_URI=models:/{platform.model}/{second}" in frontend
    files = git(platform.remote, "show", "--name-only", "--format=", "main").split()
    assert sorted(files) == [
        "overlays/local/model-server/kustomization.yaml",
        "overlays/local/streamlit/kustomization.yaml",
    ]
    trailers = platform.trailers()
    assert trailers["Model"] == platform.model
    assert trailers["Model-Version"] == second
    assert trailers["Previous-Version"] == "1"
    assert trailers["Environment"] == "local"
    assert trailers["Source"] == "cli"
    assert len(trailers["Run-Id"]) == 32
    assert (
        trailers["MLflow-Url"] == f"{mlflow_server.url}/#/models/{platform.model}/versions/{second}"
    )
    body = git(platform.remote, "log", "-1", "--format=%b", "main")
    assert "accuracy: 0.95 (0.91)" in body
    author = git(platform.remote, "log", "-1", "--format=%an <%ae>", "main")
    assert author.strip() == "mlopsctl <mlopsctl@users.noreply.example.com>"

    commits = len(platform.log())
    again = promote(cli, platform, mlflow_server, "--env", "local")
    assert again.exit_code == 0
    assert "nothing to do" in again.stdout
    assert len(platform.log()) == commits


def test_dry_run_prints_the_diff_and_changes_nothing(cli, platform, mlflow_server):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    second = mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    before = platform.log()
    result = promote(cli, platform, mlflow_server, "--env", "local", "--dry-run")
    assert result.exit_code == 0
    assert f"-      - MODEL_URI=models:/{platform.model}/0" in result.stdout
    assert f"+      - MODEL_URI=models:/{platform.model}/{second}" in result.stdout
    assert platform.log() == before
    assert git(platform.checkout, "status", "--porcelain") == ""  # the user's checkout too


def test_pull_request_environments_get_a_branch_not_a_commit_on_main(cli, platform, mlflow_server):
    mlflow_server.register(platform.model, {"accuracy": 0.95})
    second = mlflow_server.register(platform.model, {"accuracy": 0.96}, alias="champion")
    before = platform.log()
    result = promote(cli, platform, mlflow_server, "--env", "production")
    assert result.exit_code == 0, result.stdout
    # Production's first promotion: its notWorseThan gate has nothing to compare with.
    assert (
        f"production: {platform.model}@champion: {platform.model} v{second}: notWorseThan holds "
        "without a comparison: no version is promoted here yet (pin v0)"
    ) in result.stdout.splitlines()
    branch = f"mlopsctl/promote/production/{platform.model}"
    assert platform.log() == before
    assert platform.pin("production", branch) == second
    frontend = platform.show("overlays/production/streamlit/kustomization.yaml", branch)
    assert f"MODEL_URI=models:/{platform.model}/{second}" in frontend  # both pins, one branch
    assert platform.log(branch)[0] == f"promote(production): {platform.model} v0 -> v{second}"
    assert f"open a pull request from {branch} into main" in result.stdout
    again = promote(cli, platform, mlflow_server, "--env", "production")
    assert "already proposes" in again.stdout
    assert len(platform.log(branch)) == len(before) + 1


@pytest.mark.parametrize(
    ("environment", "alias", "metrics", "signature", "expected"),
    [
        ("local", "challenger", {"accuracy": 0.9}, False, "has no model signature"),
        (
            "staging",
            "challenger",
            {"accuracy": 0.5},
            True,
            "accuracy 0.5 is below the required 0.85",
        ),
        ("staging", "challenger", {"loss": 0.1}, True, "logged no 'accuracy' metric"),
    ],
)
def test_gates_refuse_with_the_reason_and_commit_nothing(
    cli, platform, mlflow_server, environment, alias, metrics, signature, expected
):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    mlflow_server.register(platform.model, metrics, signature=signature, alias=alias)
    before = platform.log()
    result = promote(cli, platform, mlflow_server, "--env", environment)
    assert result.exit_code == 1
    assert expected in result.stdout
    assert platform.log() == before
    assert git(platform.remote, "branch", "--list", "mlopsctl/*") == ""


def test_not_worse_than_holds_without_a_comparison_when_nothing_is_pinned(mlflow_server):
    gates = load_config(REPOSITORY).promotion.for_environment("production").gates
    assert gates.not_worse_than is not None  # production compares with what it pins
    version = mlflow_server.register("gates-model", {"accuracy": 0.95})
    candidate = MlflowRegistry(mlflow_server.url).version("gates-model", version)
    assert candidate is not None
    # A pin of 0: nothing to compare with, so the gate holds, and says why.
    assert refusals(gates, candidate, {"accuracy": 0.95}, True, None) == []
    assert uncompared(gates, candidate, "0") == (
        f"gates-model v{version}: notWorseThan holds without a comparison: "
        "no version is promoted here yet (pin v0)"
    )
    # A real pin: the comparison is made, and nothing is said about skipping it.
    assert uncompared(gates, candidate, "3") is None
    assert refusals(gates, candidate, {"accuracy": 0.95}, True, {"accuracy": 0.99}) == [
        f"gates-model v{version}: accuracy 0.95 is worse than the pinned version's 0.99 "
        "by more than 0.01"
    ]
    local = load_config(REPOSITORY).promotion.for_environment("local").gates
    assert uncompared(local, candidate, "0") is None  # no such gate, nothing to say


def test_production_refuses_a_version_worse_than_the_pinned_one(cli, platform, mlflow_server):
    mlflow_server.register(platform.model, {"accuracy": 0.99})
    start_pinned_at(platform, "1")
    mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="champion")
    result = promote(cli, platform, mlflow_server, "--env", "production")
    assert result.exit_code == 1
    assert (
        "accuracy 0.95 is worse than the pinned version's 0.99 by more than 0.01" in result.stdout
    )


@pytest.mark.parametrize("status", ["PENDING_REGISTRATION", "FAILED_REGISTRATION"])
def test_a_version_that_is_not_ready_is_refused(cli, platform, mlflow_server, status):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    second = mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    mlflow_server.set_status(platform.model, second, status)
    before = platform.log()
    result = promote(cli, platform, mlflow_server, "--env", "local")
    assert result.exit_code == 1
    assert f"{platform.model} v{second} is {status}, not READY" in result.stdout
    assert platform.log() == before


def test_an_edit_that_does_not_validate_is_not_committed(cli, platform, mlflow_server):
    # Someone broke the model server's base on main: the promotion must not land on top.
    overlay = platform.checkout / "overlays/local/model-server/kustomization.yaml"
    overlay.write_text(overlay.read_text().replace("newTag: 0.1.0", "newTag: latest"))
    git(
        platform.checkout,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.test",
        "commit",
        "-qam",
        "oops",
    )
    git(platform.checkout, "push", "--quiet", str(platform.remote), "main")
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    before = platform.log()
    result = promote(cli, platform, mlflow_server, "--env", "local")
    assert result.exit_code == 1
    assert "does not validate" in result.stdout
    assert "uses the mutable tag 'latest'" in result.stdout
    assert platform.log() == before


def test_status_reports_each_state_and_exits_non_zero_when_out_of_step(
    cli, platform, mlflow_server
):
    first = mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="champion")
    start_pinned_at(platform, first)
    second = mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    arguments = ("status", "--repo", str(platform.checkout), "--mlflow-uri", mlflow_server.url)
    result = cli(*arguments, "--format", "json")
    assert result.exit_code == 1
    states = {
        row["environment"]: (row["pinned"], row["desired"], row["state"])
        for row in result.json()["pins"]
    }
    assert states == {
        "local": ("1", second, "behind"),
        "staging": ("1", second, "behind"),
        "production": (first, first, "in sync"),
    }
    # One per alias; the pinned v1 is the version champion points at, so it is not read again.
    assert result.json()["registry_calls"] == 2

    assert cli(*arguments, "--env", "production").exit_code == 0
    mlflow_server.set_status(platform.model, first, "PENDING_REGISTRATION")
    assert "not READY" in cli(*arguments, "--env", "production").stdout
    mlflow_server.client().delete_registered_model_alias(platform.model, "champion")
    assert "alias missing" in cli(*arguments, "--env", "production").stdout
    table = cli(*arguments).stdout.splitlines()
    assert table[0].split()[:7] == [
        "ENVIRONMENT",
        "MODEL",
        "ALIAS",
        "GIT",
        "MLFLOW",
        "STATE",
        "RUN",
    ]


def test_status_of_an_environment_with_nothing_promoted(cli, platform, mlflow_server):
    arguments = ("status", "--repo", str(platform.checkout), "--mlflow-uri", mlflow_server.url)
    # A new registry: no alias anywhere, no version pinned anywhere. Healthy, waiting.
    result = cli(*arguments, "--format", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert {(row["pinned"], row["desired"], row["state"]) for row in result.json()["pins"]} == {
        ("0", None, "none promoted")
    }
    assert result.json()["registry_calls"] == 2  # one per alias; never a version 0
    table = cli(*arguments, "--env", "local").stdout.splitlines()[1].split()
    assert table[3:7] == ["0", "-", "none", "promoted"]

    # The trainer moved local's alias: its first promotion is due, production still waits.
    first = mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    result = cli(*arguments, "--format", "json")
    assert result.exit_code == 1
    states = {
        row["environment"]: (row["pinned"], row["desired"], row["state"])
        for row in result.json()["pins"]
    }
    assert states == {
        "local": ("0", first, "none promoted, behind"),
        "staging": ("0", first, "none promoted, behind"),
        "production": ("0", None, "none promoted"),
    }
    assert result.json()["registry_calls"] == 2


def test_status_of_a_pin_to_a_deleted_version(cli, platform, mlflow_server):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    start_pinned_at(platform, "1")
    mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    mlflow_server.client().delete_model_version(platform.model, "1")
    result = cli(
        "status",
        "--repo",
        str(platform.checkout),
        "--mlflow-uri",
        mlflow_server.url,
        "--env",
        "local",
        "--format",
        "json",
    )
    # Two pins follow local's alias, the model server's and the frontend's: one row for both.
    (row,) = result.json()["pins"]
    assert row["state"] == "version missing"
    assert [pinned["state"] for pinned in row["files"]] == ["version missing"] * 2


@pytest.mark.parametrize("kill_after_seconds", [0.3, 0.8, 1.5])
def test_a_killed_run_leaves_nothing_half_done(platform, mlflow_server, kill_after_seconds):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    second = mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    command = platform.promote_argv(mlflow_server.url, "local")
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after_seconds)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    landed = [s for s in platform.log() if s.startswith("promote(local)")]
    assert len(landed) <= 1  # before the kill it landed whole, or not at all
    assert git(platform.remote, "fsck", "--no-progress") == ""
    subprocess.run(command, check=True, capture_output=True)
    subprocess.run(command, check=True, capture_output=True)
    landed = [s for s in platform.log() if s.startswith("promote(local)")]
    assert landed == [f"promote(local): {platform.model} v0 -> v{second}"]
    assert platform.pin("local") == second


def test_pull_request_is_opened_once_then_updated(
    cli, platform, mlflow_server, github, monkeypatch
):
    from tests.support.github_standin import REPOSITORY, TOKEN

    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_API_URL", github.url)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPOSITORY)
    mlflow_server.register(platform.model, {"accuracy": 0.95})
    start_pinned_at(platform, "1")
    second = mlflow_server.register(platform.model, {"accuracy": 0.96}, alias="challenger")
    result = promote(cli, platform, mlflow_server, "--env", "staging")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"staging: pull request https://github.example.test/{REPOSITORY}/pull/1" in result.stdout
    [pull] = github.pulls
    branch = f"mlopsctl/promote/staging/{platform.model}"
    assert (pull["head"]["ref"], pull["base"]["ref"]) == (branch, "main")
    assert pull["title"] == f"promote(staging): {platform.model} v1 -> v{second}"
    assert f"Model-Version: {second}" in pull["body"]
    assert f"+      - MODEL_URI=models:/{platform.model}/{second}" in pull["body"]
    # The same review text as `mlopsctl diff`: both versions' metrics side by side, the delta,
    # and the signature compared.
    assert f"| metric | v1 | v{second} | Δ |" in pull["body"]
    assert "| accuracy | 0.95 | 0.96 | +0.01 |" in pull["body"]
    assert "Signature: unchanged." in pull["body"]

    third = mlflow_server.register(platform.model, {"accuracy": 0.97}, alias="challenger")
    promote(cli, platform, mlflow_server, "--env", "staging")
    [pull] = github.pulls  # still one pull request per environment and model
    assert pull["title"] == f"promote(staging): {platform.model} v1 -> v{third}"
    assert platform.pin("staging", branch) == third
    # Each pass: the newest pull request of the branch (closed ones too), then the open one.
    assert [method for method, _path in github.requests] == [
        "GET",
        "GET",
        "POST",
        "GET",
        "GET",
        "PATCH",
    ]


def test_a_wrong_github_token_fails_clearly(cli, platform, mlflow_server, github, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    monkeypatch.setenv("GITHUB_API_URL", github.url)
    monkeypatch.setenv("GITHUB_REPOSITORY", "example-org/mlops-platform")
    mlflow_server.register(platform.model, {"accuracy": 0.95})
    mlflow_server.register(platform.model, {"accuracy": 0.96}, alias="challenger")
    result = promote(cli, platform, mlflow_server, "--env", "staging")
    assert result.exit_code == 4
    assert "GitHub refused GET /pulls" in result.stderr and "HTTP 401" in result.stderr


def test_a_branch_that_keeps_moving_is_given_up_clearly(cli, platform, mlflow_server, monkeypatch):
    from mlopsctl.base import git

    # Every push is rejected as if another promoter always got there first.
    monkeypatch.setattr(git, "push", lambda *_args, **_kwargs: False)
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    before = platform.log()
    result = promote(cli, platform, mlflow_server, "--env", "local", "--max-attempts", "3")
    assert result.exit_code == 4
    assert f"local: {platform.model}: failed: gave up after 3 pushes rejected by a moving main" in (
        result.stderr
    )
    assert result.stderr.count("main moved on; planning again from its new head") == 3
    assert platform.log() == before


def test_the_cli_writer_promotes_only_the_environments_given_to_it(cli, platform, mlflow_server):
    mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    # As shipped every environment has a promoter: the scheduled workflow writes nothing.
    result = promote(cli, platform, mlflow_server, "--writer", "cli")
    assert result.exit_code == 0, result.stderr
    assert "nothing to do: no environment is written by cli" in result.stdout
    assert platform.pin("local") == "0" and platform.pin("staging") == "0"

    # Staging handed to the CLI: only staging moves, local stays its promoter's.
    path = platform.checkout / "mlopsctl.yaml"
    text = path.read_text()
    path.write_text(
        text.replace("registry: staging\n", "registry: staging\n      writer: cli\n", 1)
    )
    result = promote(cli, platform, mlflow_server, "--writer", "cli")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert platform.pin("staging", f"mlopsctl/promote/staging/{platform.model}") == "1"
    assert platform.pin("local") == "0"
    assert not [s for s in platform.log() if s.startswith("promote(local)")]

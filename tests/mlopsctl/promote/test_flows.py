"""mlopsctl.promote.flows: the use cases on a checkout of the remote at its head. A rollback
moves the alias back in MLflow (the intent) and lets the loop write Git, and refuses before
anything moves when it cannot know where to go or would move more than asked; a promotion or
an image change that matches no pin says so, naming the remote.

Against a real MLflow and a real bare remote (this repository's tree, tests/support/
platform_fixtures.py), through the commands that run each flow. The passes themselves (plans,
gates, landing) are tested in test_promote.py, test_landing.py and test_promotion_faults.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.cli import CliResult
from tests.support.mlflow_fixtures import MlflowServer
from tests.support.platform_fixtures import Platform, git, start_pinned_at

# The rollback that moves an alias runs, as it did in test_promote.py, against MLflow on sqlite and
# on a real PostgreSQL server (the suite's one use of `set_alias` on PostgreSQL); the others on
# sqlite: the two refusals moved with it stop before the rollback asks MLflow anything.
BOTH_BACKENDS = pytest.mark.parametrize("mlflow_server", ["sqlite", "postgresql"], indirect=True)
SQLITE = pytest.mark.parametrize("mlflow_server", ["sqlite"], indirect=True)
NOBODY = "http://127.0.0.1:9"  # no MLflow answers there: a flow that asked would exit 3

Cli = Callable[..., CliResult]


def promote(cli: Cli, platform: Platform, server: MlflowServer, *extra: str) -> CliResult:
    result: CliResult = platform.command(cli, "promote", server.url, *extra)
    return result


def rollback(cli: Cli, platform: Platform, mlflow_url: str, *extra: str) -> CliResult:
    result: CliResult = platform.command(
        cli, "rollback", mlflow_url, "--model", platform.model, *extra
    )
    return result


def alias_version(server: MlflowServer, model: str, alias: str) -> str:
    return str(server.client().get_model_version_by_alias(model, alias).version)


def change_config(platform: Platform, change: Callable[[str], str], message: str) -> None:
    """mlopsctl.yaml on the remote's main changed, as a merged pull request would."""
    path = platform.checkout / "mlopsctl.yaml"
    path.write_text(change(path.read_text()))
    platform.commit_and_push(message)


# -- rollback: the alias moves back, the loop writes Git -----------------------------------------


@BOTH_BACKENDS
def test_rollback_moves_the_alias_back_and_the_loop_writes_git(
    cli: Cli, platform: Platform, mlflow_server: MlflowServer
):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    start_pinned_at(platform, "1")
    second = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    assert promote(cli, platform, mlflow_server, "--env", "local").exit_code == 0
    assert platform.pin("local") == second

    result = rollback(cli, platform, mlflow_server.url, "--env", "local")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"moved {platform.model}@challenger to v1 in MLflow (the intent" in result.stdout
    assert "the next reconcile keeps v1" in result.stdout
    assert alias_version(mlflow_server, platform.model, "challenger") == "1"
    assert platform.pin("local") == "1"
    assert platform.log()[0] == f"promote(local): {platform.model} v{second} -> v1"
    assert platform.trailers()["Source"] == "rollback"
    # The reconcile after it agrees with the rollback instead of undoing it.
    again = promote(cli, platform, mlflow_server, "--env", "local")
    assert "nothing to do" in again.stdout
    assert platform.pin("local") == "1"


@SQLITE
def test_rollback_after_the_first_promotion_has_nothing_to_return_to(
    cli: Cli, platform: Platform, mlflow_server: MlflowServer
):
    mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    assert promote(cli, platform, mlflow_server, "--env", "local").exit_code == 0
    before = platform.log()
    result = rollback(cli, platform, mlflow_server.url, "--env", "local")
    assert result.exit_code == 2
    assert "before v1 nothing was promoted to local (its pin was v0)" in result.stderr
    assert "pass --to VERSION" in result.stderr
    assert platform.log() == before
    # The intent is left as it was.
    assert alias_version(mlflow_server, platform.model, "challenger") == "1"


@SQLITE
def test_rollback_without_history_asks_for_a_version(
    cli: Cli, platform: Platform, mlflow_server: MlflowServer
):
    mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    result = rollback(cli, platform, mlflow_server.url, "--env", "local")
    assert result.exit_code == 2
    assert "holds no earlier version" in result.stderr
    assert "pass --to VERSION" in result.stderr
    bad = rollback(cli, platform, mlflow_server.url, "--env", "local", "--to", "1/../../etc")
    assert bad.exit_code == 2
    assert "--to '1/../../etc' is not valid" in bad.stderr


@SQLITE
def test_rollback_returns_past_commits_that_left_the_pin_as_it_was(
    cli: Cli, platform: Platform, mlflow_server: MlflowServer
):
    first = mlflow_server.register(platform.model, {"accuracy": 0.9})
    start_pinned_at(platform, first)
    second = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    assert promote(cli, platform, mlflow_server, "--env", "local").exit_code == 0
    # Since the promotion, someone edited both pinned files without moving their pins.
    git(platform.checkout, "pull", "--quiet", "--ff-only", str(platform.remote), "main")
    for component in ("model-server", "streamlit"):
        path = platform.checkout / f"overlays/local/{component}/kustomization.yaml"
        path.write_text(path.read_text() + "# reviewed by the platform team\n")
    platform.commit_and_push("a note on local's overlays")

    result = rollback(cli, platform, mlflow_server.url, "--env", "local")

    assert result.exit_code == 0, result.stdout + result.stderr
    # Not v{second}, the value of the newest commit that touched the files: the one before it.
    assert f"to v{first} in MLflow (the intent; Git pinned v{second})" in result.stdout
    assert alias_version(mlflow_server, platform.model, "challenger") == first
    assert platform.pin("local") == first


@SQLITE
def test_a_rollback_is_not_held_to_not_worse_than(
    cli: Cli, platform: Platform, mlflow_server: MlflowServer
):
    """Production refuses to promote a version worse than the pinned one; going back to the
    version pinned before is what a rollback is for, so that gate does not apply to it."""
    first = mlflow_server.register(platform.model, {"accuracy": 0.95})
    start_pinned_at(platform, first)
    second = mlflow_server.register(platform.model, {"accuracy": 0.99}, alias="champion")
    start_pinned_at(platform, second)  # production's pull request for v2, merged

    result = rollback(cli, platform, mlflow_server.url, "--env", "production")

    assert result.exit_code == 0, result.stdout + result.stderr
    assert "worse than" not in result.stdout + result.stderr
    assert alias_version(mlflow_server, platform.model, "champion") == first
    branch = f"mlopsctl/promote/production/{platform.model}"
    assert platform.pin("production", branch) == first
    assert platform.trailers(branch)["Source"] == "rollback"
    assert platform.pin("production") == second  # main waits for the pull request


@SQLITE
def test_a_rollback_to_a_version_mlflow_does_not_have_moves_nothing(
    cli: Cli, platform: Platform, mlflow_server: MlflowServer
):
    first = mlflow_server.register(platform.model, {"accuracy": 0.9})
    start_pinned_at(platform, first)
    second = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    before = platform.log()

    result = rollback(cli, platform, mlflow_server.url, "--env", "local", "--to", "99")

    assert result.exit_code == 2
    assert result.stderr == f"mlopsctl: error: {platform.model} v99 does not exist in MLflow\n"
    assert alias_version(mlflow_server, platform.model, "challenger") == second
    assert platform.log() == before


# -- rollback: refused before anything moves ---------------------------------------------------


def test_a_rollback_of_pins_that_follow_two_aliases_or_of_no_pin_is_refused(
    cli: Cli, platform: Platform
):
    """Refused from the checkout alone: MLflow (nobody, here) is not asked anything."""
    streamlit = platform.checkout / "overlays/local/streamlit/kustomization.yaml"
    streamlit.write_text(
        streamlit.read_text().replace(f"{platform.model}@challenger", f"{platform.model}@champion")
    )
    platform.commit_and_push("local's frontend follows champion")
    before = platform.log()

    split = rollback(cli, platform, NOBODY, "--env", "local", "--to", "1")
    unpinned = platform.command(
        cli, "rollback", NOBODY, "--env", "local", "--model", "no-such-model", "--to", "1"
    )

    assert split.exit_code == 2, split.stdout + split.stderr
    assert split.stderr == (
        f"mlopsctl: error: the pins for {platform.model} in local follow different aliases "
        "['challenger', 'champion']: move each alias back in MLflow, then promote\n"
    )
    assert unpinned.exit_code == 2, unpinned.stdout + unpinned.stderr
    assert unpinned.stderr == "mlopsctl: error: no pin for no-such-model in local\n"
    assert platform.log() == before


def bind_staging_to_locals_registry(platform: Platform) -> None:
    """Staging follows local's registry, so both share local's @challenger."""

    def change(text: str) -> str:
        staging = text.index("    staging:\n      mode: pull-request")
        return text[:staging] + text[staging:].replace("registry: staging", "registry: local", 1)

    change_config(platform, change, "staging follows local's registry")


@SQLITE
def test_a_rollback_that_would_move_another_environment_is_refused_unless_asked(
    cli: Any, platform: Platform, mlflow_server: MlflowServer
):
    bind_staging_to_locals_registry(platform)
    first = mlflow_server.register(platform.model, {"accuracy": 0.95})
    start_pinned_at(platform, first)
    second = mlflow_server.register(platform.model, {"accuracy": 0.96}, alias="challenger")
    assert platform.command(cli, "promote", mlflow_server.url, "--env", "local").exit_code == 0
    before = platform.log()

    refused = rollback(cli, platform, mlflow_server.url, "--env", "local")

    assert refused.exit_code == 2, refused.stdout + refused.stderr
    assert "staging (overlays/staging/" in refused.stderr and "Nothing was moved" in refused.stderr
    assert "--all-following" in refused.stderr
    assert alias_version(mlflow_server, platform.model, "challenger") == second
    assert platform.log() == before

    both = rollback(cli, platform, mlflow_server.url, "--env", "local", "--all-following")

    assert both.exit_code == 0, both.stdout + both.stderr
    assert alias_version(mlflow_server, platform.model, "challenger") == first
    assert platform.pin("local") == first
    assert platform.log()[0] == f"promote(local): {platform.model} v{second} -> v{first}"
    # Staging (pull requests) had v1 pinned all along: rolled back too, it has nothing to do.
    assert platform.pin("staging") == first


# -- promote and set-image: pins that match nothing ---------------------------------------------


def test_a_promotion_that_matches_no_pin_names_the_remote(cli: Cli, platform: Platform):
    result = platform.command(cli, "promote", NOBODY, "--env", "local", "--model", "no-such-model")
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr == (
        f"mlopsctl: error: no model pin in {platform.remote} matches environment local and "
        "model no-such-model\n"
    )

"""`mlopsctl promote`'s own checks: --writer takes only the writers mlopsctl.yaml knows, and a
writer that owns none of the environments asked for is told there is nothing for it to do,
without a clone or a registry call. Promotions themselves, against a real MLflow and remote,
are tested in tests/mlopsctl/promote/."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.cli import CliResult
from tests.support.paths import REPOSITORY

# Nothing answers there: a command that called MLflow would not end with exit code 0.
NOBODY = "http://127.0.0.1:9"


def promote(cli: Callable[..., CliResult], *arguments: str) -> CliResult:
    common = ("--repo", str(REPOSITORY), "--mlflow-uri", NOBODY, "--remote", "/nowhere")
    return cli("promote", *common, *arguments)


def test_a_writer_mlopsctl_does_not_know_is_a_usage_error(cli: Callable[..., CliResult]):
    result = promote(cli, "--writer", "robot")
    assert result.exit_code == 2
    assert "argument --writer: invalid choice: 'robot'" in result.stderr


def test_a_writer_that_owns_no_environment_has_nothing_to_do(cli: Callable[..., CliResult]):
    # This repository gives every environment to a promoter: the scheduled job (cli) owns none.
    result = promote(cli, "--writer", "cli")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        "nothing to do: no environment is written by cli (writer: in mlopsctl.yaml)\n"
    )


def test_a_writer_that_does_not_own_the_environment_asked_for_has_nothing_to_do(
    cli: Callable[..., CliResult],
):
    result = promote(cli, "--writer", "cli", "--env", "staging")
    assert result.exit_code == 0
    assert result.stdout == (
        "nothing to do: staging is not written by cli (writer: in mlopsctl.yaml)\n"
    )

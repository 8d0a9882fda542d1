"""`mlopsctl rollback`'s own checks: the environment and the model are required, the environment
must be one of mlopsctl.yaml's, and there is no dry run (moving the alias is the rollback). The
rollback itself, against a real MLflow and remote, is tested in promote/test_flows.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.cli import CliResult
from tests.support.paths import REPOSITORY

NOBODY = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("arguments", "missing"),
    [
        ([], "--env, --model"),
        (["--env", "local"], "--model"),
        (["--model", "iris-classifier"], "--env"),
    ],
)
def test_the_environment_and_the_model_are_required(
    cli: Callable[..., CliResult], arguments: list[str], missing: str
):
    result = cli("rollback", "--repo", str(REPOSITORY), "--mlflow-uri", NOBODY, *arguments)
    assert result.exit_code == 2
    assert f"the following arguments are required: {missing}" in result.stderr


def test_an_environment_mlopsctl_yaml_lacks_is_refused(cli: Callable[..., CliResult]):
    result = cli(
        "rollback",
        "--repo",
        str(REPOSITORY),
        "--mlflow-uri",
        NOBODY,
        "--env",
        "qa",
        "--model",
        "iris-classifier",
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "mlopsctl: error: --env 'qa' is not one of ['local', 'staging', 'production']\n"
    )


def test_there_is_no_dry_run(cli: Callable[..., CliResult]):
    result = cli(
        "rollback", "--repo", str(REPOSITORY), "--env", "local", "--model", "m", "--dry-run"
    )
    assert result.exit_code == 2
    assert "unrecognized arguments: --dry-run" in result.stderr

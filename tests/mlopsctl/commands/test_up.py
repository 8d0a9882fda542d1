"""`mlopsctl up`'s own checks, which refuse before anything of the run starts: a repository and
one of its environments. Running an environment is tested in tests/mlopsctl/localrun/ (it takes
minutes and root); here the run's start is replaced, so that a check that let a bad value through
fails the test instead of starting a platform."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlopsctl.commands import up
from tests.support.cli import CliResult
from tests.support.paths import REPOSITORY


@pytest.fixture(autouse=True)
def no_run_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_run: object, *_arguments: object, **_keywords: object) -> None:
        raise AssertionError("the local run must not start in these tests")

    monkeypatch.setattr(up.LocalRun, "start", refuse)
    monkeypatch.setattr(up.LocalRun, "stop", lambda _run: None)


def test_outside_a_repository_it_says_so(cli: Callable[..., CliResult], tmp_path: Path):
    result = cli("up", "--repo", str(tmp_path))
    assert result.exit_code == 2
    assert f"no mlopsctl.yaml in {tmp_path}" in result.stderr


def test_an_environment_mlopsctl_yaml_lacks_is_refused(cli: Callable[..., CliResult]):
    result = cli("up", "--repo", str(REPOSITORY), "--env", "qa", "--no-port-forward")
    assert result.exit_code == 2
    assert result.stderr == (
        "mlopsctl: error: --env 'qa' is not one of ['local', 'staging', 'production']\n"
    )

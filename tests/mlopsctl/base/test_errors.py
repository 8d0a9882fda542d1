"""The exit-code table of mlopsctl.base.errors: every error has the code its module's table
gives it, and `mlopsctl` returns that code with one line that says what is wrong, never a
traceback."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mlopsctl.base import errors
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.commands import pins
from tests.support.cli import CliResult
from tests.support.trees import MINIMAL_CONFIG, write_tree

# A table row: four spaces, the class name, its exit code, what it says.
TABLE_ROW = re.compile(r"^    (?P<name>[A-Z]\w+)\s+(?P<code>\d+)\s+\S", re.MULTILINE)


def documented_codes() -> dict[str, int]:
    assert errors.__doc__ is not None
    return {row["name"]: int(row["code"]) for row in TABLE_ROW.finditer(errors.__doc__)}


def error_classes() -> dict[str, type[MlopsctlError]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, MlopsctlError)
    }


def an_error_of(error_class: type[MlopsctlError]) -> MlopsctlError:
    """One instance of each error, made the way the code that raises it makes it."""
    if error_class is errors.UnsupportedManifest:
        return errors.UnsupportedManifest("Deployment/ml-platform/web", "spec.hostPID", "not run")
    if error_class is errors.GitTimeout:
        return errors.GitTimeout("git fetch ran past 5 s", "git fetch origin", 5.0)
    if error_class is errors.GitHubError:
        return errors.GitHubError("GitHub refused the pull request (422)", 422)
    return error_class(f"{error_class.__name__} says what is wrong")


def test_the_table_lists_every_error_with_the_code_it_has():
    classes = error_classes()
    assert documented_codes() == {name: value.exit_code for name, value in classes.items()}
    # Exit code 1 is a command's own answer (findings, refusals), never an error's.
    assert 1 not in documented_codes().values()


@pytest.mark.parametrize("error_class", list(error_classes().values()), ids=list(error_classes()))
def test_the_cli_returns_the_code_of_the_error_and_says_it_in_one_line(
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    error_class: type[MlopsctlError],
):
    error = an_error_of(error_class)

    def fails(_arguments: object) -> int:
        raise error

    monkeypatch.setattr(pins, "run", fails)
    result = cli("pins", "--repo", str(tmp_path))
    assert result.exit_code == documented_codes()[error_class.__name__]
    assert result.stderr == f"mlopsctl: error: {error}\n"
    assert result.stdout == ""


def test_a_git_timeout_says_its_message_not_the_command_line_that_may_hold_a_token():
    command = "git push https://x-access-token:s3cr3t@example.test/platform.git"
    timeout = errors.GitTimeout("git push ran past its 30 s deadline", command, 30.0)
    assert str(timeout) == "git push ran past its 30 s deadline"
    assert "s3cr3t" not in str(timeout)
    # Callers written for subprocess's timeout (the readiness check) still catch it.
    assert isinstance(timeout, subprocess.TimeoutExpired)
    assert timeout.timeout == 30.0
    assert isinstance(timeout, errors.GitError) and timeout.exit_code == 4


def test_an_unsupported_manifest_names_the_resource_and_the_field():
    error = errors.UnsupportedManifest("Pod/ml-platform/web", "spec.hostNetwork", "not supported")
    assert str(error) == "Pod/ml-platform/web: spec.hostNetwork: not supported"
    assert (error.resource, error.field, error.problem) == (
        "Pod/ml-platform/web",
        "spec.hostNetwork",
        "not supported",
    )
    assert isinstance(error, errors.LocalRunError)


def test_ctrl_c_ends_with_130_and_says_so(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    def interrupted(_arguments: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(pins, "run", interrupted)
    result = cli("pins", "--repo", str(tmp_path))
    assert (result.exit_code, result.stderr) == (130, "mlopsctl: interrupted\n")


def test_a_bug_is_not_passed_off_as_an_error_the_user_can_act_on(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    def broken(_arguments: object) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr(pins, "run", broken)
    with pytest.raises(KeyError):
        cli("pins", "--repo", str(tmp_path))


def test_real_failures_end_with_their_codes(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """One failure of each code, as a user meets it: 2 a repository that is not one, 3 an MLflow
    that does not answer, 4 a remote git cannot clone."""
    not_a_repository = cli("pins", "--repo", str(tmp_path))
    assert not_a_repository.exit_code == 2
    assert "no mlopsctl.yaml in" in not_a_repository.stderr

    repository = write_tree(
        tmp_path / "repository",
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "overlays/local/app/kustomization.yaml": (
                "images:\n  # mlopsctl: image app\n  - name: registry.example.test/app\n"
                "    newTag: 1.0.0\n"
                "configMapGenerator:\n  - name: pin\n    literals:\n"
                "      # mlopsctl: model iris@champion\n      - MODEL_URI=models:/iris/3\n"
            ),
        },
    )
    # One attempt is enough to learn that nothing listens on port 9.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    unreachable = cli("status", "--repo", str(repository), "--mlflow-uri", "http://127.0.0.1:9")
    assert unreachable.exit_code == 3
    assert "MLflow at http://127.0.0.1:9 is unreachable" in unreachable.stderr

    missing = tmp_path / "missing.git"
    no_remote = cli(
        "set-image", "app", "1.2.3", "--repo", str(repository), "--remote", str(missing)
    )
    assert no_remote.exit_code == 4
    assert f"cannot clone {missing}" in no_remote.stderr

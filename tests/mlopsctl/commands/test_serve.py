"""`mlopsctl serve`'s own checks: every setting it cannot run without is refused at the start,
naming the flag and the variable that give it, before it listens or reconciles. The service
itself is tested in tests/mlopsctl/service/."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import CliResult
from tests.support.loopback import QuietHandler, serving
from tests.support.paths import REPOSITORY
from tests.support.promoter import MLOPSCTL, SECRET

# Every variable serve reads, so that the machine's own settings cannot change these tests.
VARIABLES = (
    "MLOPSCTL_LISTEN",
    "MLOPSCTL_REMOTE",
    "MLOPSCTL_BRANCH",
    "MLOPSCTL_ENVIRONMENTS",
    "MLFLOW_TRACKING_URI",
    "MLOPSCTL_RECONCILE_INTERVAL",
    "MLOPSCTL_WEBHOOK_SECRET",
    "MLOPSCTL_GIT_TOKEN",
    "MLOPSCTL_SSH_KEY_FILE",
    "MLOPSCTL_KNOWN_HOSTS_FILE",
    "MLOPSCTL_KUBECONFIG",
    "MLOPSCTL_GIT_TIMEOUT_SECONDS",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def missing_remote(tmp_path: Path) -> str:
    """A remote that is not there: serve starts anyway (a remote may be down for a while) and
    says it cannot check it yet, so each refusal below is what ends the start."""
    return str(tmp_path / "missing.git")


def serve(cli: Callable[..., CliResult], *arguments: str) -> CliResult:
    return cli("serve", *arguments)


def complete(remote: str) -> list[str]:
    """Every setting serve needs but the secret, on the command line."""
    return [
        "--remote",
        remote,
        "--environments",
        "local",
        "--mlflow-uri",
        "http://127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
    ]


def test_without_a_remote_it_does_not_start(cli: Callable[..., CliResult]):
    result = serve(cli, "--environments", "local", "--mlflow-uri", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert result.stderr == (
        "mlopsctl: error: no git remote: pass --remote or set MLOPSCTL_REMOTE\n"
    )


def test_without_an_mlflow_server_it_does_not_start(
    cli: Callable[..., CliResult], missing_remote: str
):
    result = serve(cli, "--remote", missing_remote, "--environments", "local")
    assert result.exit_code == 2
    assert result.stderr == (
        "mlopsctl: error: no MLflow server: pass --mlflow-uri or set MLFLOW_TRACKING_URI\n"
    )


@pytest.mark.parametrize("secret", [None, "short"])
def test_without_a_secret_of_16_characters_it_does_not_start(
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
    missing_remote: str,
    secret: str | None,
):
    if secret is not None:
        monkeypatch.setenv("PROMOTER_SECRET", secret)
    result = serve(cli, *complete(missing_remote), "--webhook-secret-env", "PROMOTER_SECRET")
    assert result.exit_code == 2
    assert result.stderr == (
        "mlopsctl: error: $PROMOTER_SECRET must hold the webhook secret (16 characters or more)\n"
    )


@pytest.mark.parametrize("interval", ["0", "-5"])
def test_an_interval_that_is_not_positive_is_refused(
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
    missing_remote: str,
    interval: str,
):
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", SECRET)
    result = serve(cli, *complete(missing_remote), "--interval", interval)
    assert result.exit_code == 2
    assert result.stderr.endswith(
        "mlopsctl serve: error: argument --interval: must be a positive, finite number of "
        f"seconds: {interval}\n"
    )


def test_an_interval_that_is_not_a_number_is_a_usage_error(cli: Callable[..., CliResult]):
    result = serve(cli, "--interval", "hourly")
    assert result.exit_code == 2
    assert "argument --interval: 'hourly' is not a number of seconds" in result.stderr


@pytest.mark.parametrize("interval", ["nan", "inf"])
def test_an_interval_that_is_not_finite_is_refused(
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
    missing_remote: str,
    interval: str,
):
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", SECRET)
    # A bad --listen stops the start should the interval be taken, so nothing is served.
    arguments = [*complete(missing_remote)[:-2], "--listen", "not-an-address"]
    result = serve(cli, *arguments, "--interval", interval)
    assert result.exit_code == 2
    assert "--interval" in result.stderr


def test_a_bad_reconcile_interval_variable_does_not_stop_other_commands(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MLOPSCTL_RECONCILE_INTERVAL", "hourly")
    assert cli("pins", "--repo", str(REPOSITORY)).exit_code == 0


def test_a_git_timeout_that_is_not_a_number_of_seconds_is_refused(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, missing_remote: str
):
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("MLOPSCTL_GIT_TIMEOUT_SECONDS", "two minutes")
    result = serve(cli, *complete(missing_remote))
    assert result.exit_code == 2
    assert result.stderr == (
        "mlopsctl: error: MLOPSCTL_GIT_TIMEOUT_SECONDS='two minutes' is not a git timeout: "
        "give a positive number of seconds\n"
    )


@pytest.mark.parametrize("listen", ["8080", "127.0.0.1:http", "127.0.0.1:65536", ":8080"])
def test_a_listen_address_that_is_not_host_and_port_is_refused_before_anything_is_done(
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    listen: str,
):
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", SECRET)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    asked: list[str] = []

    class Remote(QuietHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.reply(404, b"")

    with serving(Remote) as url, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        result = serve(cli, *complete(f"{url}/platform.git")[:-2], "--listen", listen)

    assert result.exit_code == 2
    # Said alone: the remote was not read, so there is nothing to say about it.
    assert result.stderr == f"mlopsctl: error: --listen {listen!r} is not HOST:PORT\n"
    assert asked == []
    # Nothing made, so nothing left for the garbage collector to clean up either.
    assert list(scratch.iterdir()) == []
    assert [str(w.message) for w in warned if issubclass(w.category, ResourceWarning)] == []


def run_until_it_exits(arguments: list[str], scratch: Path) -> subprocess.CompletedProcess[str]:
    """`mlopsctl serve ARGUMENTS` as its own process, its temporary files in `scratch`: were it
    to start serving, it is stopped here rather than block the tests."""
    environment = {name: value for name, value in os.environ.items() if name not in VARIABLES}
    environment.update(MLOPSCTL_WEBHOOK_SECRET=SECRET, TMPDIR=str(scratch))
    process = subprocess.Popen(
        [MLOPSCTL, "serve", *arguments], env=environment, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # it started serving: that is the defect
            process.terminate()
            process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


@pytest.mark.parametrize("mirror_dir", [[], ["--mirror-dir", "none"]], ids=["mirror", "none"])
def test_a_port_already_taken_stops_the_start_and_leaves_nothing_behind(
    missing_remote: str, tmp_path: Path, mirror_dir: list[str]
):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        listen = ["--listen", f"127.0.0.1:{port}"]
        result = run_until_it_exits([*complete(missing_remote)[:-2], *listen, *mirror_dir], scratch)
    assert result.returncode == 2, result.stderr
    assert f"mlopsctl: error: cannot listen on 127.0.0.1:{port}: " in result.stderr
    # With --mirror-dir none the mirror was to live in a temporary directory: gone with the rest.
    assert list(scratch.iterdir()) == []

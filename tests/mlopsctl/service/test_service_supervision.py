"""The promoter pushes only to the branch it reconciles, and its worker outlives any error."""

from __future__ import annotations

import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlopsctl import service
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.base.toolchain import resolve
from mlopsctl.promote import flows, landing
from tests.support.mlflow_fixtures import MlflowServer, free_port
from tests.support.paths import TOOLS_DIR
from tests.support.platform_fixtures import Platform, git
from tests.support.promoter import MLOPSCTL, SECRET, promotions_on_main, wait_for


def unreviewed_branch(platform: Platform, name: str) -> None:
    """A branch on the remote one commit ahead of main, whose mlopsctl.yaml is main's."""
    git(platform.checkout, "checkout", "--quiet", "-b", name)
    (platform.checkout / "UNREVIEWED").write_text("never reviewed\n")
    git(platform.checkout, "add", "UNREVIEWED")
    identity = ("-c", "user.name=t", "-c", "user.email=t@example.test")
    git(platform.checkout, *identity, "commit", "-qm", "unreviewed")
    git(platform.checkout, "push", "--quiet", str(platform.remote), name)


@pytest.mark.parametrize("by_environment", [False, True], ids=["flag", "environment"])
def test_serve_refuses_a_branch_other_than_promotion_branch(
    platform: Platform, mlflow_server: MlflowServer, tmp_path: Path, by_environment: bool
):
    unreviewed_branch(platform, "feature")
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    before = platform.log()
    arguments = [MLOPSCTL, "serve", "--listen", f"127.0.0.1:{free_port()}"]
    arguments += ["--remote", str(platform.remote), "--mlflow-uri", mlflow_server.url]
    arguments += ["--environments", "local"]
    environment = {**os.environ, "MLOPSCTL_WEBHOOK_SECRET": SECRET}
    if by_environment:
        environment["MLOPSCTL_BRANCH"] = "feature"
    else:
        arguments += ["--branch", "feature"]
    exit_code, stderr = serve_until_it_exits(arguments, environment)
    assert exit_code == 2, stderr
    assert "'feature'" in stderr and "'main'" in stderr and "promotion.branch" in stderr
    assert platform.log() == before  # the unreviewed commit never reached main


def serve_until_it_exits(arguments: list[str], environment: dict[str, str]) -> tuple[int, str]:
    """Run `mlopsctl serve`, which must refuse to start: its exit code and stderr."""
    process = subprocess.Popen(arguments, env=environment, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:  # it started serving: that is the defect
            process.terminate()
            process.communicate(timeout=30)
    return process.returncode, stderr


@pytest.mark.parametrize("setting", [None, " , "], ids=["unset", "only-commas"])
def test_serve_refuses_to_start_without_environments(platform: Platform, setting: str | None):
    environment = {k: v for k, v in os.environ.items() if k != "MLOPSCTL_ENVIRONMENTS"}
    environment["MLOPSCTL_WEBHOOK_SECRET"] = SECRET
    if setting is not None:
        environment["MLOPSCTL_ENVIRONMENTS"] = setting
    arguments = [MLOPSCTL, "serve", "--listen", f"127.0.0.1:{free_port()}"]
    arguments += ["--remote", str(platform.remote), "--mlflow-uri", "http://127.0.0.1:9"]
    returncode, stderr = serve_until_it_exits(arguments, environment)
    assert returncode == 2, stderr
    assert "--environments" in stderr and "MLOPSCTL_ENVIRONMENTS" in stderr


@pytest.mark.parametrize("by_environment", [False, True], ids=["flag", "environment"])
def test_serve_refuses_an_environment_its_config_does_not_have(
    platform: Platform, by_environment: bool
):
    before = platform.log()
    environment = {**os.environ, "MLOPSCTL_WEBHOOK_SECRET": SECRET}
    arguments = [MLOPSCTL, "serve", "--listen", f"127.0.0.1:{free_port()}"]
    arguments += ["--remote", str(platform.remote), "--mlflow-uri", "http://127.0.0.1:9"]
    if by_environment:
        environment["MLOPSCTL_ENVIRONMENTS"] = "local, qa"
    else:
        arguments += ["--environments", "local,qa"]
    returncode, stderr = serve_until_it_exits(arguments, environment)
    assert returncode == 2, stderr
    # Only the unknown one is named as owned, next to those the config has.
    assert "owns environment(s) 'qa' (" in stderr
    assert "has only 'local', 'staging', 'production'" in stderr
    assert platform.log() == before


@pytest.fixture
def in_process(platform: Platform, mlflow_server: MlflowServer) -> Iterator[Callable[..., Any]]:
    """`mlopsctl serve`'s Service on loopback against the platform's bare remote and MLflow."""
    started: list[service.Service] = []

    def start(
        interval: float, pass_timeout: float = 300.0, environments: tuple[str, ...] = ("local",)
    ) -> tuple[service.Service, list[str]]:
        log: list[str] = []
        settings = service.Settings(
            remote=str(platform.remote),
            branch="main",
            registry=MlflowRegistry(mlflow_server.url),
            toolchain=resolve(TOOLS_DIR),
            webhook_secret=SECRET,
            environments=environments,
            interval_seconds=interval,
            log=log.append,
            pass_timeout_seconds=pass_timeout,
        )
        running = service.Service(settings, ("127.0.0.1", 0))
        running.start()
        started.append(running)
        return running, log

    yield start
    for running in started:
        running.stop()


def get(running: service.Service, path: str) -> tuple[int, str]:
    try:
        url = f"http://127.0.0.1:{running.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(running: service.Service, name: str) -> float:
    _status, text = get(running, "/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_a_pass_that_raises_does_not_end_the_worker(
    platform: Platform, mlflow_server: MlflowServer, in_process, monkeypatch: pytest.MonkeyPatch
):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    second = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    real_run = flows.run
    calls: list[int] = []

    def truncated_answer_once(*arguments: Any, **keywords: Any) -> landing.Report:
        calls.append(1)
        if len(calls) == 1:  # what json.loads raises on a body MLflow cut short
            raise ValueError("Unterminated string starting at: line 1 column 9 (char 8)")
        return real_run(*arguments, **keywords)

    monkeypatch.setattr(flows, "run", truncated_answer_once)
    running, log = in_process(interval=1)
    wait_for(lambda: platform.pin("local") == second, 30, "the commit of the pass after the error")
    assert promotions_on_main(platform) == [f"promote(local): {platform.model} v0 -> v{second}"]
    assert metric(running, 'mlopsctl_reconcile_passes_total{result="error"') == 1
    expected = "reconcile (startup) failed unexpectedly: ValueError: Unterminated string"
    assert any(line.startswith(expected) for line in log), log
    assert get(running, "/healthz")[0] == 200


def test_a_branch_whose_config_promotes_elsewhere_is_refused_each_pass(
    platform: Platform, mlflow_server: MlflowServer, in_process
):
    # Set after startup, as a merge to the reconciled branch would: the pass must push nothing.
    config = platform.checkout / "mlopsctl.yaml"
    config.write_text(config.read_text().replace("  branch: main\n", "  branch: release\n"))
    identity = ("-c", "user.name=t", "-c", "user.email=t@example.test")
    git(platform.checkout, *identity, "commit", "-qam", "promote to release")
    git(platform.checkout, "push", "--quiet", str(platform.remote), "main:release", "main")
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    running, log = in_process(interval=3600)
    wait_for(lambda: running.reconciler.passes >= 1, 30, "the startup pass")
    assert metric(running, 'mlopsctl_reconcile_passes_total{result="error"') == 1
    assert any("'main'" in line and "'release'" in line for line in log), log
    for branch in ("main", "release"):
        assert not [subject for subject in platform.log(branch) if subject.startswith("promote(")]


def test_healthz_fails_when_passes_stop_finishing(
    platform: Platform, in_process, monkeypatch: pytest.MonkeyPatch
):
    entered, release = threading.Event(), threading.Event()

    def blocked_pass(*_arguments: Any, **_keywords: Any) -> landing.Report:
        entered.set()
        release.wait(30)  # bounded: a hung clone or push, released by the test
        return landing.Report()

    monkeypatch.setattr(flows, "run", blocked_pass)
    # 3 x 0.5 s + 0.5 s: passes are overdue after 2 s.
    running, _log = in_process(interval=0.5, pass_timeout=0.5)
    try:
        assert entered.wait(10)
        assert get(running, "/healthz")[0] == 200  # a pass in flight is not stuck yet
        waited = wait_for(lambda: get(running, "/healthz")[0] == 503, 10, "/healthz failing")
        assert waited >= 1  # not before the deadline
        assert "no reconcile pass has finished" in get(running, "/healthz")[1]
    finally:
        release.set()
    wait_for(lambda: get(running, "/healthz")[0] == 200, 10, "/healthz recovering")


def test_a_pass_writes_only_the_environments_the_promoter_owns(
    platform: Platform, mlflow_server: MlflowServer, in_process
):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    # local follows @challenger and would take v2 at once; this promoter owns production only.
    running, log = in_process(interval=3600, environments=("production",))
    wait_for(lambda: running.reconciler.passes >= 1, 60, "the startup pass")
    assert platform.pin("local") == "0", log
    assert promotions_on_main(platform) == []


def test_each_pass_refuses_an_owned_environment_its_config_does_not_have(
    platform: Platform, mlflow_server: MlflowServer, in_process
):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    running, log = in_process(interval=3600, environments=("local", "qa"))
    wait_for(lambda: running.reconciler.passes >= 1, 60, "the startup pass")
    assert metric(running, 'mlopsctl_reconcile_passes_total{result="error"') == 1
    assert any("'qa'" in line and "failed" in line for line in log), log
    assert promotions_on_main(platform) == []

"""mlopsctl.service.reconciler: the promoter's sync loop and the service around it. It pushes
only to the branch it reconciles and writes only the environments it owns, its worker outlives
any error, wake-ups that arrive during a pass fold into the next one, each pass's outcomes
become its metrics and log lines, and a stop lets the pass in flight finish and leaves nothing
behind. The HTTP surface is tested in test_http.py, `mlopsctl serve` as a whole in
test_service.py."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlopsctl import service
from mlopsctl.base.errors import GitError, MlopsctlError
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.base.toolchain import resolve
from mlopsctl.promote import flows, landing
from tests.support.mlflow_fixtures import MlflowServer, free_port
from tests.support.paths import TOOLS_DIR
from tests.support.platform_fixtures import Platform, git
from tests.support.promoter import MLOPSCTL, SECRET, promotions_on_main, wait_for
from tests.support.trees import minimal_remote


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


# -- passes stood in for: the worker, its wake-ups and its stop ----------------------------------


def stand_in_settings(tmp_path: Path, log: Callable[[str], None] = lambda _line: None) -> Any:
    """A promoter of a minimal remote whose passes the test stands in for (flows.run)."""
    return service.Settings(
        remote=str(minimal_remote(tmp_path)),
        branch="main",
        registry=MlflowRegistry("http://127.0.0.1:9"),
        toolchain=resolve(TOOLS_DIR),
        webhook_secret="x" * 20,
        environments=("local",),
        interval_seconds=3600,
        log=log,
    )


def test_stop_waits_for_the_pass_in_flight(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    started, finished = threading.Event(), threading.Event()

    def slow_pass(*_args: object, **_kwargs: object) -> landing.Report:
        started.set()
        time.sleep(1.5)  # a clone, a render and a push take about this long
        finished.set()
        return landing.Report()

    monkeypatch.setattr(flows, "run", slow_pass)
    promoter = service.Service(stand_in_settings(tmp_path), ("127.0.0.1", 0))
    promoter.start()
    assert started.wait(10)
    promoter.stop()  # as on SIGTERM
    assert finished.is_set(), "stop() returned before the pass in flight completed"
    assert promoter.reconciler.passes == 1  # and it started no other


def test_wake_ups_during_a_pass_fold_into_one_next_pass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """A burst of alias moves costs one more pass, not one per move; the pass is counted under
    the first trigger that asked for it."""
    entered, release = threading.Event(), threading.Event()
    sources: list[str] = []

    def held_pass(*_arguments: Any, **keywords: Any) -> landing.Report:
        sources.append(keywords["source"])
        entered.set()
        release.wait(30)
        return landing.Report()

    monkeypatch.setattr(flows, "run", held_pass)
    promoter = service.Service(stand_in_settings(tmp_path), ("127.0.0.1", 0))
    promoter.start()
    try:
        assert entered.wait(10)  # the startup pass, held
        for trigger in ["webhook"] * 5 + ["timer"] * 3:
            promoter.reconciler.wake(trigger)
        release.set()
        wait_for(lambda: promoter.reconciler.passes == 2, 30, "the folded pass")
        time.sleep(0.5)  # time enough for a third pass, were any wake-up left over
        assert promoter.reconciler.passes == 2
        assert sources == ["reconcile", "webhook"]
        assert metric(promoter, "mlopsctl_reconcile_passes_total") == 2
        assert (
            metric(promoter, 'mlopsctl_reconcile_passes_total{result="ok",trigger="webhook"}') == 1
        )
        assert metric(promoter, 'mlopsctl_reconcile_passes_total{result="ok",trigger="timer"}') == 0
    finally:
        release.set()
        promoter.stop()


def test_a_stopped_promoter_leaves_no_temporary_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """Without --mirror-dir the mirror lives in a temporary directory for the service's life."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    passed = threading.Event()

    def quick_pass(*_arguments: Any, **_keywords: Any) -> landing.Report:
        passed.set()
        return landing.Report()

    monkeypatch.setattr(flows, "run", quick_pass)
    promoter = service.Service(stand_in_settings(tmp_path), ("127.0.0.1", 0))
    promoter.start()
    assert passed.wait(30)
    assert [path.name[:17] for path in scratch.iterdir()] == ["mlopsctl-mirrors-"]  # in use
    promoter.stop()
    assert list(scratch.iterdir()) == []


# -- what a pass reads and says ------------------------------------------------------------------


def test_the_branch_config_is_read_from_the_remote_or_its_absence_said(tmp_path: Path):
    remote = minimal_remote(tmp_path)
    config = service.branch_config(str(remote), "main", ["local"])
    assert config.environments == ("local",)

    checkout = tmp_path / "minimal-checkout"
    git(checkout, "rm", "--quiet", "mlopsctl.yaml")
    identity = ("-c", "user.name=t", "-c", "user.email=t@example.test")
    git(checkout, *identity, "commit", "--quiet", "-m", "no config")
    git(checkout, "push", "--quiet", str(remote), "HEAD:main")
    with pytest.raises(MlopsctlError) as missing:
        service.branch_config(str(remote), "main", ["local"])
    assert str(missing.value) == f"{remote} has no mlopsctl.yaml on branch main"

    with pytest.raises(GitError) as unreadable:
        service.branch_config(str(tmp_path / "gone.git"), "main", ["local"])
    assert str(unreadable.value).startswith(
        f"cannot read mlopsctl.yaml of {tmp_path / 'gone.git'} (branch main): "
    )
    assert unreadable.value.exit_code == 4


def test_readiness_says_what_each_of_git_and_mlflow_answered(
    tmp_path: Path, mlflow_server: MlflowServer
):
    settings = stand_in_settings(tmp_path)
    settings.registry = MlflowRegistry(mlflow_server.url)
    assert service.ready(settings) == (True, {"git": "ok", "mlflow": "ok"})

    settings.remote = str(tmp_path / "gone.git")
    settings.registry = MlflowRegistry("http://127.0.0.1:9")
    ready, checks = service.ready(settings)
    assert not ready
    assert "does not appear to be a git repository" in checks["git"]
    assert "Connection refused" in checks["mlflow"]


def test_each_outcome_of_a_pass_becomes_its_metrics_and_log_lines(
    platform: Platform, mlflow_server: MlflowServer, in_process
):
    """Local commits, staging's gate refuses: one counted each, the refusal is out of step and
    said; then staging's pull-request branch counts its pins as out of step until merged."""
    first = mlflow_server.register(platform.model, {"accuracy": 0.8}, alias="challenger")
    running, log = in_process(interval=3600, environments=("local", "staging"))
    wait_for(lambda: running.reconciler.passes >= 1, 60, "the startup pass")

    def promotions(environment: str, result: str) -> float:
        return metric(
            running,
            f'mlopsctl_promotions_total{{environment="{environment}",model="{platform.model}",'
            f'result="{result}"}}',
        )

    assert platform.pin("local") == first
    assert (promotions("local", "committed"), promotions("staging", "refused")) == (1, 1)
    assert metric(running, "mlopsctl_pins_out_of_step") == 1
    assert metric(running, 'mlopsctl_reconcile_passes_total{result="ok",trigger="startup"}') == 1
    assert metric(running, "mlopsctl_promotion_duration_seconds_count") == 1
    assert metric(running, "mlopsctl_last_successful_reconcile_timestamp_seconds") > 0
    assert any(
        line.startswith("reconcile (startup): staging: ") and "below the required 0.85" in line
        for line in log
    ), log

    second = mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    running.reconciler.wake("webhook")
    wait_for(lambda: running.reconciler.passes >= 2, 60, "the pass the webhook asked for")

    assert platform.pin("local") == second
    assert platform.pin("staging", f"mlopsctl/promote/staging/{platform.model}") == second
    assert (promotions("local", "committed"), promotions("staging", "proposed")) == (2, 1)
    # Both of staging's pin files wait in the pull request: two pins out of step.
    assert metric(running, "mlopsctl_pins_out_of_step") == 2
    assert metric(running, 'mlopsctl_reconcile_passes_total{result="ok",trigger="webhook"}') == 1
    assert any(line.startswith("reconcile (webhook): staging: ") for line in log), log

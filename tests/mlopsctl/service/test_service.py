"""`mlopsctl serve` with a real MLflow server sending real webhooks, and real bare remotes."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from mlopsctl.service import webhooks
from tests.support.cluster_writes import deploy
from tests.support.mlflow_fixtures import MlflowServer, free_port, start_server, stop_server
from tests.support.platform_fixtures import commit_all, git
from tests.support.processes import StallingUploadPack, git_processes_in
from tests.support.promoter import (
    MLOPSCTL,
    SECRET,
    Promoter,
    promotions_on_main,
    signed,
    wait_for,
)


def register_webhook(cli, promoter: Promoter, mlflow_url: str, monkeypatch) -> None:
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", SECRET)
    result = cli(
        "webhook",
        "register",
        "--url",
        f"{promoter.url}/webhooks/mlflow",
        "--mlflow-uri",
        mlflow_url,
    )
    assert result.exit_code == 0, result.stderr


def test_an_alias_move_lands_through_the_webhook(
    cli, platform, mlflow_server: MlflowServer, start_promoter, monkeypatch
):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    promoter = start_promoter(platform, mlflow_server.url)  # no timer within the test
    # The alias must move after the startup pass, or that pass may land it instead of the webhook.
    wait_for(lambda: promoter.metric("mlopsctl_reconcile_passes_total") >= 1, 60, "startup pass")
    register_webhook(cli, promoter, mlflow_server.url, monkeypatch)
    time.sleep(1.5)  # MLflow's webhook cache (1 s in these tests) sees the new webhook
    second = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    wait_for(lambda: platform.pin("local") == second, 30, "the webhook-driven commit")
    assert promotions_on_main(platform) == [f"promote(local): {platform.model} v0 -> v{second}"]
    assert promoter.metric('mlopsctl_webhook_requests_total{result="accepted"}') >= 1
    # The pass records its metrics just after the push the test saw.
    wait_for(
        lambda: promoter.metric('mlopsctl_promotions_total{environment="local"') >= 1,
        10,
        "the promotion counted",
    )
    assert promoter.metric("mlopsctl_last_successful_reconcile_timestamp_seconds") > 0
    # Where the passes' time went: a pass that landed a commit fetched, planned and pushed.
    for phase in ("git fetch", "plan", "validate", "push"):
        assert promoter.metric(f'mlopsctl_reconcile_phase_seconds_sum{{phase="{phase}"}}') > 0
    status, body = promoter.get("/readyz")
    assert (status, json.loads(body)["checks"]) == (200, {"git": "ok", "mlflow": "ok"})


def test_the_reconcile_timer_alone_lands_it(cli, platform, mlflow_server, start_promoter):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    start_promoter(platform, mlflow_server.url, interval=2)
    second = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    wait_for(lambda: platform.pin("local") == second, 30, "the timer-driven commit")
    assert len(promotions_on_main(platform)) == 1


def test_it_heals_after_mlflow_restarts(platform, tmp_path: Path, start_promoter):
    directory = tmp_path / "mlflow"
    directory.mkdir()
    backend = f"sqlite:///{directory / 'mlflow.db'}"
    port = free_port()
    server = start_server(directory, backend, port)
    try:
        server.register(platform.model, {"accuracy": 0.9})
        promoter = start_promoter(platform, server.url, interval=1)
        stop_server(server)
        wait_for(lambda: promoter.get("/readyz")[0] == 503, 30, "readiness dropping")
        assert "mlflow" in json.loads(promoter.get("/readyz")[1])["checks"]
        server = start_server(directory, backend, port)
        second = server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
        wait_for(lambda: platform.pin("local") == second, 60, "the commit after the restart")
        wait_for(lambda: promoter.get("/readyz")[0] == 200, 30, "readiness coming back")
        assert promoter.metric('mlopsctl_reconcile_passes_total{result="error"') >= 1
    finally:
        stop_server(server)


def test_the_promoter_tags_the_version_that_runs_in_its_cluster(
    platform, mlflow_server, start_promoter, api_server, kube
):
    """Argo CD and the kubelet are stood in for as in tests/support/cluster_writes.py."""
    version = mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    kubeconfig = str(api_server.kubeconfig)
    promoter = start_promoter(platform, mlflow_server.url, 2, "--kubeconfig", kubeconfig)
    wait_for(lambda: platform.pin("local") == version, 30, "the promotion")
    commit = git(platform.remote, "rev-parse", "main").strip()
    client = mlflow_server.client()
    assert "deployed.local" not in client.get_model_version(platform.model, version).tags
    deploy(kube, version, platform.model, commit)
    wait_for(
        lambda: (
            client.get_model_version(platform.model, version).tags.get("deployed.local") == commit
        ),
        30,
        "the deployment tag",
    )
    assert promoter.metric('mlopsctl_deployment_tags_total{environment="local",result="set"}') >= 2
    assert (
        promoter.metric('mlopsctl_deployment_tags_total{environment="local",result="error"}') == 0
    )


def test_a_cluster_it_cannot_read_is_said_and_counted(
    platform, mlflow_server, start_promoter, api_server, tmp_path
):
    mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    kubeconfig = api_server.unreachable_kubeconfig(tmp_path / "kubeconfig")
    promoter = start_promoter(platform, mlflow_server.url, 3600, "--kubeconfig", str(kubeconfig))
    wait_for(
        lambda: (
            promoter.metric('mlopsctl_deployment_tags_total{environment="local",result="error"}')
            >= 1
        ),
        60,
        "the failed read counted",
    )
    assert "deployment tags (startup): local: not written: " in promoter.log.read_text()
    assert "cannot reach the API server" in promoter.log.read_text()


def test_a_bad_kubeconfig_stops_the_start(platform, mlflow_server, tmp_path):
    completed = subprocess.run(
        [
            MLOPSCTL,
            "serve",
            "--remote",
            str(platform.remote),
            "--mlflow-uri",
            mlflow_server.url,
            "--environments",
            "local",
            "--kubeconfig",
            str(tmp_path / "missing"),
        ],
        env={**os.environ, "MLOPSCTL_WEBHOOK_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode != 0
    assert f"{tmp_path / 'missing'}: cannot read the kubeconfig" in completed.stderr


def test_bad_requests_are_rejected_and_commit_nothing(platform, mlflow_server, start_promoter):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    promoter = start_promoter(platform, mlflow_server.url)
    wait_for(lambda: promoter.metric("mlopsctl_reconcile_passes_total") >= 1, 30, "the first pass")
    # The alias moves, but nothing valid tells the promoter: nothing may land.
    mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    before = platform.log()
    event = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "data": {"name": platform.model, "alias": "challenger", "version": "2"},
        }
    ).encode()

    status, answer = promoter.post(event, signed(event, secret="not-the-secret-at-all"))
    assert (status, answer["result"]) == (401, "bad_signature")
    status, answer = promoter.post(event, signed(event, timestamp=int(time.time()) - 3600))
    assert (status, answer["result"]) == (401, "stale")
    tampered = event.replace(b"challenger", b"champion!!")
    headers = signed(event)
    assert promoter.post(tampered, headers)[0] == 401
    assert promoter.post(b"{not json", signed(b"{not json"))[0] == 400
    no_signature = {k: v for k, v in signed(event).items() if k != webhooks.SIGNATURE_HEADER}
    status, answer = promoter.post(event, no_signature)
    assert status == 400 and "X-MLflow-Signature" in answer["error"]
    oversized = b"{" + b" " * (webhooks.MAX_BODY_BYTES + 10) + b"}"
    assert promoter.post(oversized, signed(oversized))[0] == 413
    other = json.dumps({"entity": "prompt", "action": "created", "data": {}}).encode()
    status, answer = promoter.post(other, signed(other))
    assert (status, answer["result"]) == (202, "ignored")
    time.sleep(2)
    assert platform.log() == before
    assert promoter.metric("mlopsctl_reconcile_passes_total") == 1  # only the startup pass

    # A valid delivery lands it, and its replay is dropped.
    headers = signed(event)
    assert promoter.post(event, headers)[1]["result"] == "accepted"
    assert promoter.post(event, headers)[1]["result"] == "duplicate"
    wait_for(lambda: platform.pin("local") == "2", 30, "the commit from the valid delivery")
    assert len(promotions_on_main(platform)) == 1
    for result in ("bad_signature", "stale", "malformed", "too_large", "ignored", "duplicate"):
        assert promoter.metric(f'mlopsctl_webhook_requests_total{{result="{result}"}}') >= 1, result


def test_sigterm_stops_it_cleanly_and_a_restart_resumes(platform, mlflow_server, start_promoter):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    promoter = start_promoter(platform, mlflow_server.url)
    assert promoter.stop() == 0
    assert "stopped" in promoter.log.read_text()
    second = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    start_promoter(platform, mlflow_server.url)  # its startup pass catches up
    wait_for(lambda: platform.pin("local") == second, 30, "the commit after the restart")


def _tgkill(pid: int, thread_id: int, signal_number: int) -> None:
    """A signal to one thread of another process (the kernel otherwise picks the thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_TGKILL, pid, thread_id, signal_number) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


SYS_TGKILL = 234  # x86_64


def test_sigterm_delivered_to_another_thread_still_stops_it(
    platform, mlflow_server, start_promoter
):
    """The kernel may hand SIGTERM to any thread of the process; the main thread must still run
    the handler (it once waited untimed on an event and never did: the pod would be killed at
    the end of its grace period, mid-pass)."""
    promoter = start_promoter(platform, mlflow_server.url)
    pid = promoter.process.pid
    [thread, *_others] = sorted(
        int(task.name) for task in Path(f"/proc/{pid}/task").iterdir() if int(task.name) != pid
    )
    _tgkill(pid, thread, signal.SIGTERM)
    assert promoter.process.wait(timeout=60) == 0
    log = promoter.log.read_text()
    assert "received SIGTERM: finishing the pass in flight" in log
    assert log.rstrip().endswith("stopped")


def test_two_replicas_land_one_commit(cli, platform, mlflow_server, start_promoter, monkeypatch):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    first = start_promoter(platform, mlflow_server.url, interval=1)
    start_promoter(platform, mlflow_server.url, interval=1)
    second = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    wait_for(lambda: platform.pin("local") == second, 30, "the commit")
    time.sleep(3)  # both replicas pass again: neither may add a commit
    assert promotions_on_main(platform) == [f"promote(local): {platform.model} v0 -> v{second}"]
    assert first.metric("mlopsctl_reconcile_passes_total") >= 2


def test_webhook_registration_is_idempotent(cli, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", SECRET)
    arguments = (
        "webhook",
        "register",
        "--url",
        "http://127.0.0.1:9/webhooks/mlflow",
        "--name",
        "idempotence-check",
        "--mlflow-uri",
        mlflow_server.url,
    )
    assert "created" in cli(*arguments).stdout
    assert "updated" in cli(*arguments).stdout
    hooks = [h for h in mlflow_server.client().list_webhooks() if h.name == "idempotence-check"]
    assert len(hooks) == 1
    assert {(e.entity.value, e.action.value) for e in hooks[0].events} == set(
        webhooks.RELEVANT_EVENTS
    )
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", "short")
    assert cli(*arguments).exit_code == 2


def test_a_promoter_killed_mid_fetch_is_replaced_by_one_that_lands_the_move(
    platform, mlflow_server, start_promoter, tmp_path: Path
):
    """A promoter (and the git it runs) killed while its mirror is receiving a fetch, as a pod
    evicted mid-pass is; the next promoter's pass fetches into the same mirror and lands the
    move once."""
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    first = start_promoter(platform, mlflow_server.url, interval=1)
    wait_for(lambda: first.metric("mlopsctl_reconcile_passes_total") >= 1, 60, "startup pass")
    [metadata] = Path(os.environ["MLOPSCTL_MIRROR_DIR"]).glob("*/.git")
    mirror = metadata.parent
    stalling = StallingUploadPack.install(mirror, tmp_path)
    started, stall = stalling.started, stalling.stall
    stall.write_text("")
    # Big enough that its pack is still arriving when the transfer stalls.
    (platform.checkout / "model-card.txt").write_text(os.urandom(2_000_000).hex())
    commit_all(platform.checkout, "a model card")
    git(platform.checkout, "push", "--quiet", str(platform.remote), "main")
    second = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    fetching: list[int] = []
    try:
        # A pass every second, but under a loaded suite one took over 30 s to reach its fetch.
        wait_for(started.exists, 120, "a pass's fetch")
        wait_for(lambda: bool(fetching.extend(git_processes_in(mirror)) or fetching), 10, "git")
    finally:
        first.process.kill()
        first.process.wait(timeout=30)
        for pid in fetching or git_processes_in(mirror):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert platform.pin("local") != second
    stall.unlink()
    start_promoter(platform, mlflow_server.url)  # its startup pass recovers the mirror
    wait_for(lambda: platform.pin("local") == second, 60, "the commit after the kill")
    assert promotions_on_main(platform) == [f"promote(local): {platform.model} v0 -> v{second}"]

"""What any client may hold of the promoter's HTTP surface: stalled heads and bodies are cut
after the read timeout while /healthz answers and the thread count stays put, connections past
the limit are answered 503 at once, /readyz asks git and MLflow once per interval however many
ask it, and a shutdown lets the pass in flight finish while /healthz still answers.

The service is the real one on loopback; passes are stand-ins unless a test says otherwise."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlopsctl import service
from mlopsctl.base import git
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.base.toolchain import resolve
from mlopsctl.promote import flows, landing
from mlopsctl.service.http import HttpLimits
from tests.support.loopback import QuietHandler, serving
from tests.support.paths import TOOLS_DIR
from tests.support.promoter import SECRET, metric_total, signed, wait_for
from tests.support.trees import minimal_remote

BODY_MARKER = "body-marker-that-must-not-be-logged"
STALLED_CONNECTIONS = 100


@dataclass
class Running:
    service: service.Service
    log: list[str]
    passes: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.service.port

    def get(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metric(self, name: str) -> float:
        _status, text = self.get("/metrics")
        return metric_total(text, name)


@pytest.fixture
def start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """`mlopsctl serve`'s Service on loopback with the given limits; passes only count."""
    started: list[Running] = []

    def start_service(
        limits: HttpLimits,
        remote: str | None = None,
        mlflow_url: str = "http://127.0.0.1:9",
        run_pass: Callable[..., landing.Report] | None = None,
    ) -> Running:
        passes: list[str] = []

        def counted_pass(*_arguments: object, source: str, **_keywords: object) -> landing.Report:
            passes.append(source)
            return landing.Report()

        monkeypatch.setattr(flows, "run", run_pass or counted_pass)
        log: list[str] = []
        settings = service.Settings(
            remote=remote or str(minimal_remote(tmp_path)),
            branch="main",
            registry=MlflowRegistry(mlflow_url),
            toolchain=resolve(TOOLS_DIR),
            webhook_secret=SECRET,
            environments=("local",),
            interval_seconds=3600,
            log=log.append,
        )
        running = Running(service.Service(settings, ("127.0.0.1", 0), limits=limits), log, passes)
        running.service.start()
        started.append(running)
        return running

    yield start_service
    for running in started:
        if not running.service.stopped.is_set():
            running.service.stop()


def thread_count() -> int:
    """Threads of this process as the kernel counts them (the promoter runs in it)."""
    return len(list(Path("/proc/self/task").iterdir()))


def read_reply(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    reply = b""
    for _ in range(1000):
        chunk = connection.recv(65536)
        if not chunk:
            return reply
        reply += chunk
    raise AssertionError("the server kept sending")


def stalled_webhook(port: int) -> socket.socket:
    """A delivery whose head arrives and whose body stops a third of the way through."""
    body = json.dumps({"entity": "model_version_alias", "note": BODY_MARKER}).encode()
    head = "".join(f"{name}: {value}\r\n" for name, value in signed(body).items())
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(
        b"POST /webhooks/mlflow HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + head.encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 3]
    )
    return connection


def test_stalled_bodies_are_cut_after_the_read_timeout_while_healthz_answers(
    start: Callable[..., Running],
):
    running = start(HttpLimits(read_timeout_seconds=3))
    assert running.get("/healthz")[0] == 200
    threads_before = thread_count()
    connections = [stalled_webhook(running.port) for _ in range(STALLED_CONNECTIONS)]
    try:
        # While every stalled body is held open, the server answers, without a thread each.
        for _ in range(3):
            assert running.get("/healthz")[0] == 200
        assert thread_count() <= threads_before + 2
        replies = [read_reply(connection) for connection in connections]
    finally:
        for connection in connections:
            connection.close()
    for reply in replies:
        head, _, content = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), reply[:200]
        assert json.loads(content)["result"] == "timeout"
    assert running.metric('mlopsctl_webhook_requests_total{result="timeout"}') == len(replies)
    refusals = [line for line in running.log if line.startswith("webhook refused (timeout)")]
    assert len(refusals) == STALLED_CONNECTIONS
    assert all("from 127.0.0.1" in line for line in refusals)
    assert all(BODY_MARKER not in line for line in running.log)
    assert running.passes == ["reconcile"]  # no stalled delivery woke a pass
    assert running.get("/healthz")[0] == 200


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"POST /webhooks/mlflow HTTP/1.1\r\nHost: 127.0.0.1\r\n", id="half-a-head"),
    ],
)
def test_a_head_that_never_ends_is_closed_after_the_read_timeout(
    start: Callable[..., Running], sent: bytes
):
    running = start(HttpLimits(read_timeout_seconds=1))
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as connection:
        connection.sendall(sent)
        assert read_reply(connection) == b""  # closed, nothing understood to answer
    assert running.get("/healthz")[0] == 200


def test_a_body_left_unread_does_not_keep_the_connection(start: Callable[..., Running]):
    """A GET with a body it never sends completely: answered, then closed, not held open."""
    running = start(HttpLimits(read_timeout_seconds=60))
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as connection:
        connection.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 9000\r\n\r\n"
        )
        reply = read_reply(connection)
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in reply.lower()


def test_past_the_connection_limit_requests_are_answered_503_at_once(
    start: Callable[..., Running],
):
    running = start(HttpLimits(read_timeout_seconds=3, max_connections=10))
    connections = [
        socket.create_connection(("127.0.0.1", running.port), timeout=30) for _ in range(10)
    ]
    try:
        # Bounded retries only for the server to accept the ten; then every request is refused.
        wait_for(lambda: running.get("/healthz")[0] == 503, 10, "/healthz refused at the limit")
    finally:
        for connection in connections:
            connection.close()
    wait_for(lambda: running.get("/healthz")[0] == 200, 30, "/healthz once the idle ones closed")


@pytest.fixture
def counted_readiness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str, dict[str, int]]]:
    """A real bare git remote and an MLflow /health stand-in, each counting what it is asked;
    ls-remote is slowed so that checks overlapping in time would show."""
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    counts = {"ls-remote": 0, "ls-remote at once": 0, "most at once": 0, "health": 0}
    lock = threading.Lock()
    real_git_at = git.git_at

    def counting_git_at(*arguments: str, **keywords: Any) -> subprocess.CompletedProcess[str]:
        if arguments[:1] != ("ls-remote",):
            return real_git_at(*arguments, **keywords)
        with lock:
            counts["ls-remote"] += 1
            counts["ls-remote at once"] += 1
            counts["most at once"] = max(counts["most at once"], counts["ls-remote at once"])
        try:
            time.sleep(0.5)
            return real_git_at(*arguments, **keywords)
        finally:
            with lock:
                counts["ls-remote at once"] -= 1

    monkeypatch.setattr(git, "git_at", counting_git_at)

    class Health(QuietHandler):
        def do_GET(self) -> None:
            with lock:
                counts["health"] += 1
            self.reply(200 if self.path == "/health" else 404, b"OK", "text/plain")

    with serving(Health) as url:
        yield str(remote), url, counts


def test_a_burst_of_readyz_runs_one_git_ls_remote_and_one_mlflow_call(
    start: Callable[..., Running], counted_readiness: tuple[str, str, dict[str, int]]
):
    remote, mlflow_url, counts = counted_readiness
    running = start(HttpLimits(readiness_cache_seconds=600), remote=remote, mlflow_url=mlflow_url)
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: running.get("/readyz"), range(60)))
    assert {status for status, _body in answers} == {200}
    assert {body for _status, body in answers} == {
        json.dumps({"ready": True, "checks": {"git": "ok", "mlflow": "ok"}})
    }
    assert (counts["ls-remote"], counts["health"], counts["most at once"]) == (1, 1, 1)


def test_a_shutdown_finishes_the_pass_in_flight_while_healthz_answers(
    start: Callable[..., Running],
):
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def held_pass(*_arguments: object, **_keywords: object) -> landing.Report:
        entered.set()
        release.wait(30)  # bounded: a long clone or push, released by the test
        finished.set()
        return landing.Report()

    running = start(HttpLimits(graceful_shutdown_seconds=2), run_pass=held_pass)
    assert entered.wait(10)
    stopping = threading.Thread(target=running.service.stop)  # as on SIGTERM
    stopping.start()
    try:
        wait_for(lambda: running.service.reconciler.stopping, 10, "the stop request")
        assert running.get("/healthz")[0] == 200  # the liveness probe still gets its answer
        body = json.dumps({"entity": "model_version_alias", "action": "created"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{running.port}/webhooks/mlflow", data=body, headers=signed(body)
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        # A 5xx: MLflow delivers it again, to the promoter that replaces this one.
        assert refused.value.code == 503
        assert json.loads(refused.value.read())["result"] == "unavailable"
        assert stopping.is_alive() and not finished.is_set()
    finally:
        release.set()
    stopping.join(60)
    assert not stopping.is_alive(), "stop() did not return after the pass finished"
    assert finished.is_set()
    assert running.service.reconciler.passes == 1  # and it started no other
    assert running.log[-1] == "stopped"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.port), timeout=5).close()


def test_a_stalled_client_does_not_hold_up_the_shutdown(start: Callable[..., Running]):
    running = start(HttpLimits(read_timeout_seconds=120, graceful_shutdown_seconds=1))
    connection = stalled_webhook(running.port)
    try:
        wait_for(lambda: running.get("/healthz")[0] == 200, 10, "the server answering")
        stopping = threading.Thread(target=running.service.stop)
        stopping.start()
        # Bounded well below the 120 s the stalled body would otherwise be given.
        stopping.join(60)
        assert not stopping.is_alive(), "the stalled connection held the shutdown"
        reply = read_reply(connection)
    finally:
        connection.close()
    # Given up on at shutdown, and told so with a 5xx: MLflow delivers it again later.
    head, _, content = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), reply[:200]
    assert json.loads(content)["result"] == "unavailable"

"""The promoter's HTTP surface on its own: the routes and what each answers, a webhook delivery
read within its bounds and verified before it wakes the worker, refusals counted and logged
without the body, heads h11 refuses answered in JSON, and the listening socket.

The app is driven through ASGI as uvicorn drives it, with a stand-in for the worker (the
reconciler) and a real ReplayMemory, signatures and Prometheus registry; the end-to-end tests
through `mlopsctl serve` are in test_service*.py."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from mlopsctl.base.errors import MlopsctlError
from mlopsctl.service import webhooks
from mlopsctl.service.http import (
    HttpLimits,
    HttpServer,
    PromoterApp,
    ReadinessCache,
    listening_socket,
)
from tests.support.promoter import SECRET, metric_total, signed

EVENT = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "data": {"name": "iris", "alias": "champion", "version": "2"},
    }
).encode()


@dataclass
class Worker:
    """The reconciler as the app sees it: whether it stops, when it last finished, wake-ups."""

    stopping: bool = False
    idle_seconds: float = 1.0
    woken: list[str] = field(default_factory=list)

    def wake(self, trigger: str) -> None:
        self.woken.append(trigger)

    def seconds_since_last_pass(self) -> float:
        return self.idle_seconds


@dataclass
class Settings:
    webhook_secret: str = SECRET
    health_deadline_seconds: float = 900.0
    log: Any = None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.webhooks = Counter(
            "mlopsctl_webhook_requests", "by result", ["result"], registry=self.registry
        )

    def count(self, result: str) -> float:
        return (
            self.registry.get_sample_value("mlopsctl_webhook_requests_total", {"result": result})
            or 0.0
        )


@dataclass
class Promoter:
    app: PromoterApp
    worker: Worker
    metrics: Metrics
    log: list[str]
    readiness_checks: list[int]


@pytest.fixture
def promoter() -> Iterator[Promoter]:
    log: list[str] = []
    checks: list[int] = []

    def ready() -> tuple[bool, dict[str, str]]:
        checks.append(1)
        return False, {"git": "ok", "mlflow": "connection refused"}

    worker, metrics = Worker(), Metrics()
    limits = HttpLimits(read_timeout_seconds=0.3)
    readiness = ReadinessCache(ready, limits.readiness_cache_seconds)
    app = PromoterApp(
        Settings(log=log.append),  # type: ignore[arg-type]
        metrics,  # type: ignore[arg-type]
        worker,  # type: ignore[arg-type]
        webhooks.ReplayMemory(),
        readiness,
        limits,
    )
    yield Promoter(app, worker, metrics, log, checks)
    readiness.close()


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: PromoterApp,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    chunks: list[bytes] | None = None,
    then: str = "end",
) -> Answer:
    """One request through ASGI with the body in `chunks`; after them the body ends
    (`then="end"`), or the client sends nothing more (`"wait"`) or goes away (`"disconnect"`)."""
    pending = list(chunks or [])

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            more = bool(pending) or then != "end"
            return {"type": "http.request", "body": chunk, "more_body": more}
        if then == "disconnect":
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # a client that sends nothing more
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "client": ("127.0.0.1", 40000),
        "headers": [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in (headers or {}).items()
        ],
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    if not sent:
        return Answer(None, {}, b"")
    start, *bodies = sent
    answer_headers = {name.decode(): value.decode() for name, value in start["headers"]}
    return Answer(
        start["status"], answer_headers, b"".join(message.get("body", b"") for message in bodies)
    )


def delivery(body: bytes = EVENT, **overrides: str) -> dict[str, str]:
    headers = {**signed(body), "Content-Length": str(len(body))}
    headers.update(overrides)
    return headers


def test_unknown_paths_and_methods_get_a_json_404(promoter: Promoter):
    answer = call(promoter.app, "GET", "/nope")
    assert (answer.status, answer.json()) == (404, {"error": "no such path /nope"})
    assert call(promoter.app, "POST", "/healthz").status == 404
    assert call(promoter.app, "GET", "/webhooks/mlflow").status == 404


def test_healthz_answers_503_once_no_pass_has_finished_within_the_deadline(promoter: Promoter):
    assert call(promoter.app, "GET", "/healthz").json() == {"status": "ok"}
    promoter.worker.idle_seconds = 901
    stuck = call(promoter.app, "GET", "/healthz")
    assert (stuck.status, stuck.json()) == (
        503,
        {"status": "stuck", "error": "no reconcile pass has finished for 901 s"},
    )


def test_readyz_says_each_check_and_asks_once_per_interval(promoter: Promoter):
    first = call(promoter.app, "GET", "/readyz")
    assert (first.status, first.json()) == (
        503,
        {"ready": False, "checks": {"git": "ok", "mlflow": "connection refused"}},
    )
    # asyncio.run makes a new event loop per call: the cache holds across them, as uvicorn's
    # one loop would.
    call(promoter.app, "GET", "/readyz")
    assert len(promoter.readiness_checks) == 1


def test_readiness_is_checked_again_once_the_interval_has_passed():
    now = [1000.0]
    results = [(True, {"git": "ok"}), (False, {"git": "timed out"})]
    calls: list[int] = []

    def check() -> tuple[bool, dict[str, str]]:
        calls.append(1)
        return results[len(calls) - 1]

    def failing() -> tuple[bool, dict[str, str]]:
        raise RuntimeError("a bug in the check")

    async def scenario() -> list[tuple[bool, dict[str, str]]]:
        cache = ReadinessCache(check, 10, clock=lambda: now[0])
        seen = [await cache.result()]
        now[0] += 9.5
        seen.append(await cache.result())  # still within the interval: reused
        now[0] += 1
        seen.append(await cache.result())  # past it: checked again
        broken = ReadinessCache(failing, 10, clock=lambda: now[0])
        seen.append(await broken.result())
        cache.close()
        broken.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen == [results[0], results[0], results[1], (False, {"check": "failed: RuntimeError"})]
    assert len(calls) == 2


def test_a_valid_delivery_wakes_the_worker_once_and_its_replay_is_dropped(promoter: Promoter):
    headers = delivery()
    accepted = call(promoter.app, "POST", "/webhooks/mlflow", headers, [EVENT[:40], EVENT[40:]])
    assert (accepted.status, accepted.json()) == (202, {"status": "queued", "result": "accepted"})
    assert "connection" not in accepted.headers  # the body was read: the connection may stay
    replayed = call(promoter.app, "POST", "/webhooks/mlflow", headers, [EVENT])
    assert (replayed.status, replayed.json()["result"]) == (200, "duplicate")
    assert promoter.worker.woken == ["webhook"]
    assert [line for line in promoter.log if "queued" in line] == [
        "webhook: model_version_alias.created for iris: queued"
    ]
    assert (promoter.metrics.count("accepted"), promoter.metrics.count("duplicate")) == (1, 1)


@pytest.mark.parametrize(
    ("headers", "status", "result", "reason"),
    [
        ({"Content-Length": None}, 411, "malformed", "no Content-Length"),
        ({"Content-Length": "+91"}, 400, "malformed", "Content-Length is not one number"),
        # A digit to str.isdigit(), not to int().
        ({"Content-Length": "\u00b2"}, 400, "malformed", "Content-Length is not one number"),
        ({"Content-Length": "70000"}, 413, "too_large", "Content-Length 70000"),
        ({webhooks.SIGNATURE_HEADER: "v1,AAAA"}, 401, "bad_signature", "does not match"),
    ],
)
def test_refused_deliveries_are_answered_counted_and_logged_without_their_body(
    promoter: Promoter,
    headers: dict[str, str | None],
    status: int,
    result: str,
    reason: str,
):
    sent = delivery()
    for name, value in headers.items():
        if value is None:
            sent.pop(name)
        else:
            sent[name] = value
    answer = call(promoter.app, "POST", "/webhooks/mlflow", sent, [EVENT])
    assert (answer.status, answer.json()["result"]) == (status, result)
    assert promoter.metrics.count(result) == 1
    assert promoter.worker.woken == []
    [line] = promoter.log
    assert line.startswith(f"webhook refused ({result}): ") and reason in line
    assert f"delivery '{sent[webhooks.DELIVERY_HEADER]}' from 127.0.0.1" in line
    assert "champion" not in line  # nothing of the body


def test_a_refusal_before_the_body_is_read_closes_the_connection(promoter: Promoter):
    too_large = delivery(**{"Content-Length": str(webhooks.MAX_BODY_BYTES + 1)})
    answer = call(promoter.app, "POST", "/webhooks/mlflow", too_large, [b"{"])
    assert answer.status == 413
    assert answer.headers["connection"] == "close"


def test_a_body_that_stops_arriving_is_given_up_after_the_read_timeout(promoter: Promoter):
    answer = call(promoter.app, "POST", "/webhooks/mlflow", delivery(), [EVENT[:10]], "wait")
    assert (answer.status, answer.json()) == (
        408,
        {"error": "the body did not arrive within 0.3 s", "result": "timeout"},
    )
    assert promoter.metrics.count("timeout") == 1
    assert promoter.worker.woken == []


def test_a_client_that_goes_away_mid_body_gets_no_answer_and_wakes_nothing(promoter: Promoter):
    answer = call(promoter.app, "POST", "/webhooks/mlflow", delivery(), [EVENT[:10]], "disconnect")
    assert answer.status is None
    assert promoter.worker.woken == []


def test_while_stopping_deliveries_get_503_so_that_mlflow_sends_them_again(promoter: Promoter):
    promoter.worker.stopping = True
    answer = call(promoter.app, "POST", "/webhooks/mlflow", delivery(), [EVENT])
    assert (answer.status, answer.json()["result"]) == (503, "unavailable")
    assert promoter.worker.woken == []
    assert promoter.metrics.count("unavailable") == 1


def test_a_body_sent_where_none_is_read_closes_the_connection(promoter: Promoter):
    answer = call(promoter.app, "GET", "/healthz", {"Content-Length": "9000"})
    assert (answer.status, answer.headers["connection"]) == (200, "close")
    metrics = call(promoter.app, "GET", "/metrics", {"Transfer-Encoding": "chunked"})
    assert (metrics.status, metrics.headers["connection"]) == (200, "close")


def test_a_delivery_id_cannot_forge_a_log_line(promoter: Promoter):
    forged = "x\nwebhook: forged line " + "y" * 200
    call(promoter.app, "POST", "/webhooks/mlflow", {webhooks.DELIVERY_HEADER: forged})
    [line] = promoter.log
    assert "\n" not in line
    assert "delivery 'x\\nwebhook: forged line yyy" in line
    assert "y" * 100 not in line  # cut to its first 100 characters


def test_metrics_are_served_in_prometheus_text(promoter: Promoter):
    call(promoter.app, "POST", "/webhooks/mlflow", {})
    answer = call(promoter.app, "GET", "/metrics")
    assert answer.headers["content-type"].startswith("text/plain; version=")
    text = answer.body.decode()
    assert metric_total(text, 'mlopsctl_webhook_requests_total{result="malformed"}') == 1


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    return reply


def test_a_head_h11_refuses_gets_a_json_answer_counted_as_a_refused_delivery(promoter: Promoter):
    server = HttpServer(promoter.app, ("127.0.0.1", 0), promoter.app.limits)
    server.start()
    try:
        delivery_id = str(uuid.uuid4())
        reply = raw_request(
            server.port,
            b"POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n"
            + f"{webhooks.DELIVERY_HEADER}: {delivery_id}\r\n\r\n{{}}".encode(),
        )
        other = raw_request(server.port, b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n")
    finally:
        server.stop()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body) == {
        "error": "Content-Length must be a number in digits 0-9",
        "result": "malformed",
    }
    assert promoter.metrics.count("malformed") == 1
    assert other.startswith(b"HTTP/1.1 400 ")
    assert json.loads(other.partition(b"\r\n\r\n")[2])["error"] == (
        "the request is not valid HTTP/1.1"
    )
    assert promoter.log[0] == (
        "webhook refused (malformed): Content-Length is not one number in digits 0-9; "
        f"delivery '{delivery_id}' from 127.0.0.1"
    )
    assert promoter.log[1].startswith("request refused (malformed): not a valid HTTP/1.1 request")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()


def test_a_port_already_taken_is_said_with_the_address():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(MlopsctlError, match=f"cannot listen on 127.0.0.1:{port}: "):
            listening_socket(("127.0.0.1", port), 8)

"""The promoter's HTTP surface: a small ASGI app on uvicorn, with every wait bounded.

One event-loop thread serves every connection, so a client holding a connection open costs a
socket and a few KiB, not a thread. What a client may hold is bounded: a request's head must
arrive within the read timeout of its first byte (or of the connection opening), a webhook body
within the read timeout of its head, an idle kept-alive connection is closed after a few seconds,
and past `max_connections` open connections requests are answered 503 at once. `/readyz` asks
git and MLflow at most once per cache interval, however many probes (or strangers) ask.

uvicorn's h11 protocol parses the head itself and refuses a malformed one (a Content-Length not
in digits, two lengths) before the app sees it; the protocol here answers those refusals in
JSON, counted and logged as the app answers the ones it finds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from mlopsctl.base.errors import MlopsctlError
from mlopsctl.service import webhooks

if TYPE_CHECKING:
    from mlopsctl.service.reconciler import Metrics, Reconciler, Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WEBHOOK_PATH = "/webhooks/mlflow"
SHUTTING_DOWN = "the promoter is shutting down; retry"
# Content-Length digits read at all: 20 are far past any body taken, and int() stays cheap.
MAX_LENGTH_DIGITS = 20
# Bytes of a request head kept to name a refused delivery (h11 refuses heads over 16 KiB).
MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True)
class HttpLimits:
    """How long and how much any client may hold of the promoter's HTTP surface."""

    # A request's head, and a webhook's body after it, each within this many seconds. MLflow
    # sends a delivery of a few hundred bytes in one write; 10 s is generous on a busy node.
    read_timeout_seconds: float = 10.0
    # An idle kept-alive connection is closed after this (uvicorn counts whole seconds).
    keep_alive_seconds: int = 5
    # Open connections past which requests get 503 at once: each costs a socket and a few KiB
    # (up to 80 KiB while a body is buffered), well inside the container's memory and files.
    max_connections: int = 200
    # Connections the kernel queues before the server accepts them.
    backlog: int = 64
    # On shutdown, requests in flight get this long to finish before they are cancelled.
    graceful_shutdown_seconds: int = 10
    # /readyz reuses a readiness result this long: the kubelet probes every 15 s, and nothing
    # else should make the promoter run git ls-remote (with its token) or call MLflow more often.
    readiness_cache_seconds: float = 10.0


class ReadinessCache:
    """One readiness check per interval, never two at once: callers during a check wait for it.

    The check runs on a thread of its own (git and urllib block); the lock is the event loop's,
    so waiting callers hold no thread.
    """

    def __init__(
        self,
        check: Callable[[], tuple[bool, dict[str, str]]],
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._seconds = seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._result: tuple[bool, dict[str, str]] | None = None
        self._checked_at = 0.0
        # Daemon-like by shutdown(wait=False): a check in flight never holds up the exit.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readiness")

    async def result(self) -> tuple[bool, dict[str, str]]:
        async with self._lock:
            if self._result is None or self._clock() - self._checked_at >= self._seconds:
                loop = asyncio.get_running_loop()
                try:
                    self._result = await loop.run_in_executor(self._executor, self._check)
                except Exception as error:
                    self._result = (False, {"check": f"failed: {type(error).__name__}"})
                self._checked_at = self._clock()
            return self._result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Request:
    """What the app reads of an ASGI scope: method, path, headers as http.server showed them."""

    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        client = scope.get("client")
        self.client_host: str = client[0] if client else "unknown"
        # ISO-8859-1, as http.server decoded header bytes: every byte maps to one character.
        self.headers: list[tuple[str, str]] = [
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in scope["headers"]
        ]

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]

    def declares_body(self) -> bool:
        lengths = self.header_values("content-length")
        return bool(self.header_values("transfer-encoding")) or any(
            length != "0" for length in lengths
        )


async def send_json(send: Send, status: int, payload: dict[str, Any], close: bool = False) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:
        # The request's body, if any, stays unread: the connection cannot carry another one.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PromoterApp:
    """The ASGI app: the webhook endpoint, /healthz, /readyz and /metrics."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        reconciler: Reconciler,
        replays: webhooks.ReplayMemory,
        readiness: ReadinessCache,
        limits: HttpLimits,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.reconciler = reconciler
        self.replays = replays
        self.readiness = readiness
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off and websockets are not served: nothing else arrives
        request = Request(scope)
        # A body the route does not read must not be left on a kept-alive connection, where a
        # client could trickle it forever past every timeout.
        close = request.declares_body()
        route = (request.method, request.path)
        if route == ("POST", WEBHOOK_PATH):
            await self._webhook(request, receive, send)
        elif route == ("GET", "/healthz"):
            await self._healthz(send, close)
        elif route == ("GET", "/readyz"):
            is_ready, checks = await self.readiness.result()
            await send_json(send, 200 if is_ready else 503, {"ready": is_ready, "checks": checks})
        elif route == ("GET", "/metrics"):
            body = generate_latest(self.metrics.registry)
            headers = [
                (b"content-type", CONTENT_TYPE_LATEST.encode()),
                (b"content-length", b"%d" % len(body)),
            ]
            if close:
                headers.append((b"connection", b"close"))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        else:
            await send_json(send, 404, {"error": f"no such path {request.path}"}, close)

    async def _healthz(self, send: Send, close: bool) -> None:
        # Alive means passes keep finishing: a dead or stuck worker gets the pod restarted.
        idle = self.reconciler.seconds_since_last_pass()
        if idle > self.settings.health_deadline_seconds:
            payload = {
                "status": "stuck",
                "error": f"no reconcile pass has finished for {idle:.0f} s",
            }
            await send_json(send, 503, payload, close)
        else:
            await send_json(send, 200, {"status": "ok"}, close)

    async def _webhook(self, request: Request, receive: Receive, send: Send) -> None:
        try:
            status, result, message, close = await self._receive(request, receive)
        except asyncio.CancelledError:
            # The graceful shutdown stopped waiting for this body. The task ends either way;
            # answering first, with a 5xx, makes MLflow deliver it again later.
            self.refused(request, "unavailable", "the promoter shut down before the body arrived")
            status, result, message, close = 503, "unavailable", SHUTTING_DOWN, True
        except Exception as error:
            # A request the checks did not foresee still gets an answer, and is counted.
            status, result, message, close = 500, "error", "the delivery could not be handled", True
            self.refused(request, result, f"{message}: {type(error).__name__}")
        if status == 0:
            return  # the client went away mid-body: there is no one to answer
        key = "error" if status >= 400 else "status"
        await send_json(send, status, {key: message, "result": result}, close)

    def refused(self, request: Request, result: str, reason: str) -> None:
        """Count a refused delivery and log why, who sent it and its id; never its body."""
        self.metrics.webhooks.labels(result).inc()
        self._log_refusal(
            result, reason, request.header(webhooks.DELIVERY_HEADER), request.client_host
        )

    def _log_refusal(self, result: str, reason: str, delivery_id: str | None, sender: str) -> None:
        # ascii() quotes and escapes the sender's text, so it cannot forge log lines.
        shown_id = ascii(delivery_id[:100]) if delivery_id is not None else "none"
        self.settings.log(
            f"webhook refused ({result}): {reason}; delivery {shown_id} from {sender}"
        )

    async def _receive(self, request: Request, receive: Receive) -> tuple[int, str, str, bool]:
        """Read and verify one delivery: HTTP status, result label, message, close or not.

        Status 0: the client disconnected before its body was complete."""
        if self.reconciler.stopping:
            # A pass started now would never run: a 5xx makes MLflow deliver it again later,
            # to this promoter's successor.
            self.refused(request, "unavailable", "the promoter is shutting down")
            return 503, "unavailable", SHUTTING_DOWN, True
        lengths = request.header_values("content-length")
        if not lengths:
            # A body, if any (chunked), stays unread.
            self.refused(request, "malformed", "no Content-Length")
            return 411, "malformed", "Content-Length is required", True
        # h11 has already refused lengths that differ or are not digits; checked again here so
        # that the rule holds whatever parses the head.
        if len(set(lengths)) > 1 or not webhooks.is_ascii_number(lengths[0], MAX_LENGTH_DIGITS):
            self.refused(request, "malformed", "Content-Length is not one number in digits 0-9")
            return 400, "malformed", "Content-Length must be a number in digits 0-9", True
        length = int(lengths[0])
        if length > webhooks.MAX_BODY_BYTES:
            self.refused(request, "too_large", f"Content-Length {length}")
            return 413, "too_large", f"body over {webhooks.MAX_BODY_BYTES} bytes", True
        body = bytearray()
        deadline = time.monotonic() + self.limits.read_timeout_seconds
        more = True
        while more:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                timeout = self.limits.read_timeout_seconds
                self.refused(request, "timeout", f"body incomplete after {timeout:g} s")
                return 408, "timeout", f"the body did not arrive within {timeout:g} s", True
            if message["type"] == "http.disconnect":
                return 0, "", "", True
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
        headers = {name: request.header(name) or "" for name in webhooks.HEADERS}
        verdict = webhooks.verify(headers, bytes(body), self.settings.webhook_secret, self.replays)
        if verdict.status >= 400:
            self.refused(request, verdict.result, verdict.message)
        else:
            self.metrics.webhooks.labels(verdict.result).inc()
        if verdict.result == "accepted":
            self.reconciler.wake("webhook")
            model = verdict.model or "a model"
            self.settings.log(f"webhook: {verdict.event_name} for {model}: queued")
        return verdict.status, verdict.result, verdict.message, False

    def malformed_head(self, head: bytes, client: str, error: h11.RemoteProtocolError) -> Message:
        """The JSON answer to a head h11 refused, counted and logged like the app's refusals.

        Only the head's first lines are read: the delivery id names the refused delivery in the
        log; the body (never parsed, past the blank line) is neither read nor logged."""
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[:2]
        fields = [
            (name.strip().lower(), value.strip())
            for name, separator, value in (line.partition(":") for line in lines[1:])
            if separator
        ]
        about_length = "Content-Length" in str(error)
        if about_length:
            reason = "Content-Length is not one number in digits 0-9"
            message = "Content-Length must be a number in digits 0-9"
        else:
            reason = f"not a valid HTTP/1.1 request ({str(error)[:200]!a})"
            message = "the request is not valid HTTP/1.1"
        if target == ["POST", WEBHOOK_PATH]:
            delivery_id = next(
                (value for name, value in fields if name == webhooks.DELIVERY_HEADER.lower()),
                None,
            )
            self.metrics.webhooks.labels("malformed").inc()
            self._log_refusal("malformed", reason, delivery_id, client)
        else:
            self.settings.log(f"request refused (malformed): {reason}; from {client}")
        return {"error": message, "result": "malformed"}


def protocol_for(app: PromoterApp, limits: HttpLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol, with a deadline on each request's head and JSON refusals."""

    class _RecordingConnection(h11.Connection):
        """Keeps the error h11 raised: uvicorn's own handler drops it."""

        last_error: h11.RemoteProtocolError | None = None

        def next_event(self) -> Any:
            try:
                return super().next_event()
            except h11.RemoteProtocolError as error:
                self.last_error = error
                raise

    class PromoterProtocol(H11Protocol):
        def __init__(self, *arguments: Any, **keywords: Any) -> None:
            super().__init__(*arguments, **keywords)
            self._recording = _RecordingConnection(h11.SERVER, MAX_HEAD_BYTES)
            self.conn = self._recording
            self._head = bytearray()
            self._head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                if self._head_deadline is None:
                    self._arm_head_deadline()  # the next request on a kept-alive connection
                self._head += data[: max(0, MAX_HEAD_BYTES + 4 - len(self._head))]
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                # The head is parsed (or refused): the app bounds the body from here.
                self._cancel_head_deadline()
                self._head.clear()

        def send_400_response(self, msg: str) -> None:
            error = self._recording.last_error or h11.RemoteProtocolError(
                msg, error_status_hint=400
            )
            client = self.client[0] if self.client else "unknown"
            try:
                payload = app.malformed_head(bytes(self._head), client, error)
            except Exception as failure:
                payload = {"error": "malformed request", "result": "malformed"}
                app.settings.log(f"request refused: {type(failure).__name__} while answering")
            body = json.dumps(payload).encode()
            status = error.error_status_hint
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"connection", b"close"),
            ]
            reason = STATUS_PHRASES.get(status, b"")
            for event in (
                h11.Response(status_code=status, headers=headers, reason=reason),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
            self.transport.close()

        def _arm_head_deadline(self) -> None:
            self._head_deadline = self.loop.call_later(
                limits.read_timeout_seconds, self._head_timed_out
            )

        def _cancel_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_timed_out(self) -> None:
            # Nothing of the request was understood yet: there is nothing to answer.
            self._head_deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return PromoterProtocol


class _Server(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # Requests cancelled by the graceful timeout answer before their connections close.
        await asyncio.sleep(0.1)
        # Connections still open after the graceful timeout (a stalled body) are closed here,
        # not left to the garbage collector once the loop is gone.
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()


def listening_socket(listen: tuple[str, int], backlog: int) -> socket.socket:
    host, port = listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as error:
        raise MlopsctlError(f"cannot listen on {host}:{port}: {error.strerror}") from error


class HttpServer:
    """uvicorn on its own thread, on a socket bound when this is made (so the port is known)."""

    def __init__(self, app: PromoterApp, listen: tuple[str, int], limits: HttpLimits) -> None:
        self.limits = limits
        self._app = app
        self._socket = listening_socket(listen, limits.backlog)
        # Kept: the socket is closed on shutdown, and callers still name the port afterwards.
        self._port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            app,
            http=protocol_for(app, limits),
            loop="asyncio",
            ws="none",
            lifespan="off",
            interface="asgi3",
            # The service logs one line per pass and per refusal; uvicorn only its errors, and
            # it must not reconfigure the process's logging.
            log_config=None,
            log_level="error",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=limits.keep_alive_seconds,
            limit_concurrency=limits.max_connections,
            backlog=limits.backlog,
            timeout_graceful_shutdown=limits.graceful_shutdown_seconds,
        )
        self._server = _Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="http", daemon=True
        )
        self._thread.start()
        # The socket already listens, so clients queue meanwhile; this only catches a start-up
        # that failed, rather than serving nothing in silence.
        for _ in range(200):
            if self._server.started or not self._thread.is_alive():
                break
            time.sleep(0.05)
        if not self._server.started:
            raise MlopsctlError("the HTTP server did not start")

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), close every connection."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self.limits.graceful_shutdown_seconds + 5)
        else:
            self._socket.close()
        self._app.readiness.close()

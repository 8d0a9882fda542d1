"""The model server's entry point: MLflow's scoring server for the pinned version, with metrics.

A pin of version 0 (`models:/<name>/0`) means "no version has been promoted to this environment
yet": MLflow numbers versions from 1, so 0 never names a real one. A new environment starts
there, with an empty registry, and must still become healthy (Argo CD waits for the model server
before it syncs the later waves). For such a pin this serves a placeholder on the same host and
port: /ping and /health answer 200 (the environment is healthy and waits for its first
promotion), /version names the model and version 0, and /invocations answers 503 with the error
code NO_MODEL_PROMOTED, so a client can tell "nothing promoted yet" from "the server is broken".

Any other URI is loaded once, at start, through the tracking server, and served by MLflow's own
scoring app (`mlflow.pyfunc.scoring_server`: the endpoints, request timeout and answers of
`mlflow models serve --env-manager local`) in this process under uvicorn. Around it, /metrics: the
prediction requests by status, their latency and the server errors, labelled with the model and
the version served, so a promotion shows on a dashboard as the line where the version changes.
`mlflow models serve` has no /metrics, and MLServer (`--enable-mlserver`) labels its metrics with
its own model name, not the registry's version, and cannot load `models:/` URIs itself.

The placeholder needs only the standard library and prometheus_client: it must start without the
registry or MLflow.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import FrameType
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

# What socketserver hands a TCP server's process_request (typeshed's spelling).
Request = socket.socket | tuple[bytes, socket.socket]

NO_MODEL_PROMOTED = "NO_MODEL_PROMOTED"
NOTHING_PROMOTED_URI = re.compile(r"^models:/(?P<name>[^/@]+)/0$")
PINNED_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
PREDICTIONS_PATH = "/invocations"
METRICS_PATH = "/metrics"
# From a few milliseconds (a small model, one row) to MLflow's request timeout (60 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# A few probes and a frontend: a handful of threads is plenty, and bounds what a flood can take.
MAXIMUM_CONCURRENT_REQUESTS = 16
SOCKET_TIMEOUT_SECONDS = 5
# Bodies sent to /invocations are read (so the client sees the answer rather than a reset
# connection) but not kept; beyond this the connection is closed after the answer.
MAXIMUM_BODY_BYTES = 1 << 20


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """The options of `mlflow models serve` this server honours.

    Exits 2 with a message (argparse's convention) when one is missing, malformed, or one this
    server does not honour (a silently ignored option would be worse).
    """
    parser = argparse.ArgumentParser(
        prog="serve.py",
        description="Serve the pinned model version, or a placeholder while none is promoted.",
        # `-h` is --host, as for `mlflow models serve`.
        add_help=False,
        allow_abbrev=False,
    )
    parser.add_argument("-m", "--model-uri", required=True)
    parser.add_argument("-h", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    # The model's runtime is installed in the image: nothing is installed at start.
    parser.add_argument("--env-manager", choices=["local"], default="local")
    # One process: the metrics live in it (several workers would each count a part).
    parser.add_argument("-w", "--workers", type=int, choices=[1], default=1)
    parser.add_argument("-t", "--timeout", type=int, default=None)
    arguments = parser.parse_args(list(argv))
    if not 0 < arguments.port < 65536:
        parser.error(f"argument -p/--port: {arguments.port} is not a TCP port (1-65535)")
    if arguments.timeout is not None and arguments.timeout <= 0:
        parser.error(f"argument -t/--timeout: {arguments.timeout} is not a number of seconds")
    return arguments


def nothing_promoted(model_uri: str) -> str | None:
    """The model's name when the URI pins version 0 (nothing promoted yet), else None."""
    match = NOTHING_PROMOTED_URI.match(model_uri)
    return match["name"] if match else None


def model_labels(model_uri: str) -> tuple[str, str]:
    """(model, version) of a pinned `models:/<name>/<version>` URI; the URI itself otherwise."""
    match = PINNED_URI.match(model_uri)
    return (match["name"], match["version"]) if match else (model_uri, "")


class PredictionMetrics:
    """Prediction requests, their latency and the server errors, labelled with what is served."""

    def __init__(self, model: str, version: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # memory, CPU, open files of this server
        labels = ["model", "version"]
        self.requests = Counter(
            "model_server_requests",
            "Prediction requests (/invocations) by HTTP status",
            [*labels, "code"],
            registry=self.registry,
        )
        self.errors = Counter(
            "model_server_request_errors",
            "Prediction requests the server failed (HTTP 5xx)",
            [*labels, "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "model_server_request_duration_seconds",
            "Time from a prediction request to its answer",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.info = Gauge(
            "model_server_model_info",
            "The registered model version this server serves (always 1)",
            labels,
            registry=self.registry,
        )
        self.model, self.version = model, version
        self.info.labels(model, version).set(1)
        # Zeros from the start: a ratio or a rate has a value before the first request.
        self.requests.labels(model, version, "200")
        self.errors.labels(model, version, "500")
        self.latency.labels(model, version)

    def observe(self, status: int, seconds: float) -> None:
        self.requests.labels(self.model, self.version, str(status)).inc()
        if status >= 500:
            self.errors.labels(self.model, self.version, str(status)).inc()
        self.latency.labels(self.model, self.version).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _json(document: dict[str, str | bool]) -> bytes:
    return json.dumps(document).encode()


class PlaceholderHandler(BaseHTTPRequestHandler):
    """The scoring server's endpoints, answered for a model with no version promoted."""

    server: PlaceholderServer
    timeout = SOCKET_TIMEOUT_SECONDS  # a client that stops sending frees its thread
    server_version = "mlops-platform-model-server-placeholder"

    def _answer(self, status: int, document: dict[str, str | bool] | None) -> None:
        body = b"" if document is None else _json(document)
        self.send_response(status)
        if document is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drain_body(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = MAXIMUM_BODY_BYTES + 1
        if length > MAXIMUM_BODY_BYTES or length < 0:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                break
            length -= len(chunk)

    def _not_found(self) -> None:
        self._drain_body()
        self._answer(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": "No such endpoint."})

    def do_GET(self) -> None:
        name = self.server.model_name
        path = self.path.split("?", 1)[0]
        if path in ("/ping", "/health"):
            self._answer(
                200,
                {
                    "status": "no model promoted",
                    "model": name,
                    "version": "0",
                    "message": f"No version of {name} has been promoted to this environment "
                    "yet; this placeholder answers until one is.",
                },
            )
        elif path == "/version":
            self._answer(200, {"model": name, "version": "0", "promoted": False})
        elif path == METRICS_PATH:
            body = self.server.metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._not_found()

    def do_POST(self) -> None:
        name = self.server.model_name
        if self.path.split("?", 1)[0] != PREDICTIONS_PATH:
            self._not_found()
            return
        started = time.perf_counter()
        self._drain_body()
        self._answer(
            503,
            {
                "error_code": NO_MODEL_PROMOTED,
                "message": f"No version of {name} has been promoted to this environment yet: "
                "train one and move the alias it follows; the promoter then pins it.",
            },
        )
        self.server.metrics.observe(503, time.perf_counter() - started)

    # Every other method is "anything else": 404, as the brief of the endpoints says.
    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_found

    def log_message(self, format: str, *args: object) -> None:
        # Probes come every few seconds: logging them would bury everything else.
        # A request that timed out before its request line has no path yet.
        if getattr(self, "path", "").split("?", 1)[0] not in ("/ping", "/health", METRICS_PATH):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class PlaceholderServer(HTTPServer):
    """An HTTP server with a bounded number of request threads and no DNS lookups."""

    def __init__(self, host: str, port: int, model_name: str) -> None:
        self.model_name = model_name
        self.metrics = PredictionMetrics(model_name, "0")
        self._slots = threading.BoundedSemaphore(MAXIMUM_CONCURRENT_REQUESTS)
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), PlaceholderHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name; a pod whose resolver is slow
        # or absent would then start late or not at all. The name is only used in logs.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Request, client_address: Any) -> None:
        # Blocks the accept loop while every slot is taken: further clients wait in the
        # listen backlog instead of each getting a thread.
        self._slots.acquire()
        threading.Thread(
            target=self._serve_one, args=(request, client_address), daemon=True
        ).start()

    def _serve_one(self, request: Request, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # one broken request must not end the server
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()


def _stop(signal_number: int, _frame: FrameType | None) -> None:
    # As PID 1 in a container, a signal without a handler is ignored: SIGTERM would wait for
    # the grace period and a SIGKILL. Exit at once instead; there is no state to save.
    raise SystemExit(0)


def serve_placeholder(host: str, port: int, model_name: str) -> None:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = PlaceholderServer(host, port, model_name)
    print(
        f"No version of {model_name} is promoted to this environment yet (pin: version 0): "
        f"serving the placeholder on {host}:{port}; /invocations answers 503 {NO_MODEL_PROMOTED}.",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class WithMetrics:
    """An ASGI app around the scoring app: times and counts /invocations, answers /metrics."""

    def __init__(self, app: App, metrics: PredictionMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == METRICS_PATH and scope["method"] in ("GET", "HEAD"):
            body = self.metrics.exposition()
            headers = [
                (b"content-type", CONTENT_TYPE_LATEST.encode()),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send(
                {"type": "http.response.body", "body": body if scope["method"] == "GET" else b""}
            )
        elif scope["path"] == PREDICTIONS_PATH:
            started = time.perf_counter()
            status = 500  # what the client gets when the app fails before answering

            async def send_and_note(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await self.app(scope, receive, send_and_note)
            finally:
                self.metrics.observe(status, time.perf_counter() - started)
        else:
            await self.app(scope, receive, send)


def serve_model(model_uri: str, host: str, port: int, timeout: int | None) -> int:
    """Load the pinned version through the tracking server and serve it until SIGTERM."""
    if timeout is not None:
        os.environ["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(timeout)
    try:
        import uvicorn
        from mlflow.pyfunc import scoring_server
    except ImportError as error:
        print(f"serve.py: cannot serve {model_uri}: {error}", file=sys.stderr)
        return 127
    model, version = model_labels(model_uri)
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "(no MLFLOW_TRACKING_URI)")
    print(
        f"serve.py: loading {model_uri} through {tracking_uri}",
        file=sys.stderr,
        flush=True,
    )
    loaded = scoring_server.load_model_with_mlflow_config(model_uri)  # type: ignore[no-untyped-call]
    app = scoring_server.init(loaded)
    uvicorn.run(
        WithMetrics(app, PredictionMetrics(model, version)),
        host=host,
        port=port,
        workers=1,
        log_level="info",
    )
    return 0


def main(argv: Sequence[str]) -> int:
    arguments = parse_arguments(argv)
    model_name = nothing_promoted(arguments.model_uri)
    if model_name is not None:
        serve_placeholder(arguments.host, arguments.port, model_name)
        return 0
    return serve_model(arguments.model_uri, arguments.host, arguments.port, arguments.timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The model server's entry point: `mlflow models serve` of the pinned version, or a placeholder.

A pin of version 0 (`models:/<name>/0`) means "no version has been promoted to this environment
yet": MLflow numbers versions from 1, so 0 never names a real one. A new environment starts
there, with an empty registry, and must still become healthy (Argo CD waits for the model server
before it syncs the later waves). For such a pin this serves a placeholder on the same host and
port: /ping and /health answer 200 (the environment is healthy and waits for its first
promotion), /version names the model and version 0, and /invocations answers 503 with the error
code NO_MODEL_PROMOTED, so a client can tell "nothing promoted yet" from "the server is broken".

Any other URI replaces this process with `mlflow models serve` and the arguments exactly as
given, so the real scoring server runs as the container's main process, as it did before.

Only the standard library is used: the placeholder must start without the registry or MLflow.
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
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import FrameType
from typing import Any

# What socketserver hands a TCP server's process_request (typeshed's spelling).
Request = socket.socket | tuple[bytes, socket.socket]

NO_MODEL_PROMOTED = "NO_MODEL_PROMOTED"
NOTHING_PROMOTED_URI = re.compile(r"^models:/(?P<name>[^/@]+)/0$")
# A few probes and a frontend: a handful of threads is plenty, and bounds what a flood can take.
MAXIMUM_CONCURRENT_REQUESTS = 16
SOCKET_TIMEOUT_SECONDS = 5
# Bodies sent to /invocations are read (so the client sees the answer rather than a reset
# connection) but not kept; beyond this the connection is closed after the answer.
MAXIMUM_BODY_BYTES = 1 << 20


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """The options `mlflow models serve` takes that the wrapper needs; others are left alone.

    Exits 2 with a message (argparse's convention) when they are missing or malformed.
    """
    parser = argparse.ArgumentParser(
        prog="serve.py",
        description="Serve the pinned model version, or a placeholder while none is promoted.",
        # `-h` is --host, as for `mlflow models serve`; unknown options are passed through, so
        # an abbreviation must not swallow one of them.
        add_help=False,
        allow_abbrev=False,
    )
    parser.add_argument("-m", "--model-uri", required=True)
    parser.add_argument("-h", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--env-manager")
    arguments, _passed_through = parser.parse_known_args(list(argv))
    if not 0 < arguments.port < 65536:
        parser.error(f"argument -p/--port: {arguments.port} is not a TCP port (1-65535)")
    return arguments


def nothing_promoted(model_uri: str) -> str | None:
    """The model's name when the URI pins version 0 (nothing promoted yet), else None."""
    match = NOTHING_PROMOTED_URI.match(model_uri)
    return match["name"] if match else None


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
        else:
            self._not_found()

    def do_POST(self) -> None:
        name = self.server.model_name
        if self.path.split("?", 1)[0] != "/invocations":
            self._not_found()
            return
        self._drain_body()
        self._answer(
            503,
            {
                "error_code": NO_MODEL_PROMOTED,
                "message": f"No version of {name} has been promoted to this environment yet: "
                "train one and move the alias it follows; the promoter then pins it.",
            },
        )

    # Every other method is "anything else": 404, as the brief of the endpoints says.
    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_found

    def log_message(self, format: str, *args: object) -> None:
        # Probes come every few seconds: logging them would bury everything else.
        # A request that timed out before its request line has no path yet.
        if getattr(self, "path", "").split("?", 1)[0] not in ("/ping", "/health"):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class PlaceholderServer(HTTPServer):
    """An HTTP server with a bounded number of request threads and no DNS lookups."""

    def __init__(self, host: str, port: int, model_name: str) -> None:
        self.model_name = model_name
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


def main(argv: Sequence[str]) -> int:
    arguments = parse_arguments(argv)
    model_name = nothing_promoted(arguments.model_uri)
    if model_name is not None:
        serve_placeholder(arguments.host, arguments.port, model_name)
        return 0
    command = ["mlflow", "models", "serve", *argv]
    try:
        os.execvp(command[0], command)
    except OSError as error:
        print(f"serve.py: cannot run {' '.join(command)}: {error}", file=sys.stderr)
        return 127
    return 0  # not reached: execvp replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

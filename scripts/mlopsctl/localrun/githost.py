"""The git host the Applications name, served on this machine: git's smart HTTP over TLS.

Every Argo CD Application and the promoter name the platform's repository by its URL
(`https://github.com/example-org/mlops-platform.git`). In the local run that name resolves, for
the pods, to this server: it answers `git clone`, `git ls-remote` and `git push` for exactly the
repositories it is given, through `git http-backend`, with a certificate from the run's own CA.
Reads are anonymous; pushes need the token the promoter sends (`Authorization: Basic`, password
= token), as GitHub wants them. It never talks to the real github.com.

Run it as its own process:

    python -m mlopsctl.localrun.githost --listen 10.214.0.2:443 \\
        --certificate github.com.crt --key github.com.key \\
        --repository /example-org/mlops-platform.git=/var/lib/run/mlops-platform.git \\
        --token-file token [--log githost.log]

or in-process with `serve` (tests) or `GitHost` (a server to start, ask for its address, close).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hmac
import os
import re
import selectors
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import IO, cast
from urllib.parse import parse_qs

from mlopsctl.base.errors import LocalRunError

REALM = "mlopsctl local git host"
# Every read or write on a client socket, the TLS handshake included, and an idle keep-alive.
SOCKET_TIMEOUT_SECONDS = 60.0
# One git http-backend run: a push of a few hundred MB over loopback takes seconds, not minutes.
BACKEND_TIMEOUT_SECONDS = 600.0
MAX_REQUEST_BODY_BYTES = 512 * 1024 * 1024
# What http-backend may say before it has read the whole request (progress lines, an early
# error); more than this is not git talking.
MAX_EARLY_OUTPUT_BYTES = 16 * 1024 * 1024
MAX_BACKEND_HEADER_BYTES = 64 * 1024
MAX_CONNECTIONS = 32
# How long a stopping server lets requests in flight (a push) finish before it cuts them off.
SHUTDOWN_GRACE_SECONDS = 20.0
PIECE_BYTES = 64 * 1024

_SERVICES = ("/info/refs", "/git-upload-pack", "/git-receive-pack")
_URL_PATH = re.compile(r"^(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]{0,512}$")
_GIT_PROTOCOL = re.compile(r"^[A-Za-z0-9=:._-]{1,256}$")
_USER_NAME = re.compile(r"^[A-Za-z0-9._@+-]{1,100}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# http-backend's own framing headers: this server frames the body itself.
_HOP_BY_HOP = {"connection", "transfer-encoding", "keep-alive", "status"}

Log = Callable[[str], None]


@dataclass(frozen=True)
class Route:
    """A request this host serves: which repository, which part of git's protocol."""

    repository: Path
    service_path: str
    query: str
    pushes: bool


@dataclass(frozen=True)
class Refusal:
    """A request this host does not serve, with the status and reason to answer."""

    status: int
    reason: str
    allow: str | None = None


def repository_key(url_path: str) -> str:
    """The path a repository answers to, as GitHub matches it: with or without `.git`."""
    return url_path.removesuffix(".git")


def route(method: str, target: str, repositories: Mapping[str, Path]) -> Route | Refusal:
    """What a request (method and request-target) asks of which repository.

    `repositories` is keyed by `repository_key`. Only git's smart protocol is served: the dumb
    protocol (plain files under the repository) and every other path are not found."""
    path, _, query = target.partition("?")
    for service_path in _SERVICES:
        if path.endswith(service_path):
            repository = repositories.get(repository_key(path[: -len(service_path)]))
            break
    else:
        return Refusal(404, "not found")
    if repository is None:
        return Refusal(404, "repository not found")
    if service_path == "/info/refs":
        if method not in ("GET", "HEAD"):
            return Refusal(405, "use GET", allow="GET")
        services = parse_qs(query).get("service", [])
        if services not in (["git-upload-pack"], ["git-receive-pack"]):
            return Refusal(404, "only git's smart HTTP protocol is served")
        return Route(repository, service_path, query, pushes=services == ["git-receive-pack"])
    if method != "POST":
        return Refusal(405, "use POST", allow="POST")
    return Route(repository, service_path, query, pushes=service_path == "/git-receive-pack")


def checked_repositories(repositories: Mapping[str, Path]) -> dict[str, Path]:
    """The repositories keyed by `repository_key`, each checked to be a bare git repository."""
    checked: dict[str, Path] = {}
    for url_path, directory in repositories.items():
        if not _URL_PATH.match(url_path) or "/../" in f"{url_path}/":
            raise LocalRunError(
                f"repository URL path {url_path!r}: use a path such as /example-org/name.git"
            )
        key = repository_key(url_path)
        if key in checked:
            raise LocalRunError(f"repository URL path {url_path!r} is given twice")
        bare = directory.resolve()
        if not ((bare / "HEAD").is_file() and (bare / "objects").is_dir()):
            raise LocalRunError(
                f"repository {url_path}: {directory} is not a bare git repository "
                "(create it with git init --bare)"
            )
        checked[key] = bare
    if not checked:
        raise LocalRunError("the git host needs at least one repository to serve")
    return checked


class _ClientError(Exception):
    """The client's request cannot be served; answered with `status` and the connection closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A threaded TCP server that does each client's TLS handshake in that client's thread (a
    slow handshake never holds up the others) and can cut every connection off when stopping."""

    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True
    request_queue_size = 64

    def __init__(
        self,
        listen: tuple[str, int],
        context: ssl.SSLContext,
        repositories: Mapping[str, Path],
        token: str,
        log: Log,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        self.context = context
        self.repositories = dict(repositories)
        self.token = token.encode()
        self.log = log
        self.stopping = False
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Condition()
        self._connections: dict[int, ssl.SSLSocket] = {}
        self._busy = 0
        self.backends: set[subprocess.Popen[bytes]] = set()
        super().__init__(listen, _Handler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        connection = cast(socket.socket, request)
        if self.stopping or not self._slots.acquire(blocking=False):
            self.log(f"{_peer(client_address)} - refused: {MAX_CONNECTIONS} connections open")
            self.shutdown_request(connection)
            return
        super().process_request(connection, client_address)

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        plain = cast(socket.socket, request)
        plain.settimeout(SOCKET_TIMEOUT_SECONDS)
        connection = self.context.wrap_socket(
            plain, server_side=True, do_handshake_on_connect=False
        )
        descriptor = connection.fileno()
        # Registered while open, unregistered before closed: `stop` may shut it down meanwhile.
        with self._lock:
            self._connections[descriptor] = connection
        try:
            try:
                connection.do_handshake()
            except (ssl.SSLError, OSError) as error:
                # A client on OpenSSL that does not trust the certificate ends here.
                self.log(f"{_peer(client_address)} - TLS handshake failed: {error}")
                return
            try:
                handler = _Handler(connection, client_address, self)
            except OSError as error:
                # A reset, a timeout, a TLS alert: the request's own line (if any) is logged.
                self.log(f"{_peer(client_address)} - connection ended: {error}")
                return
            if not handler.requests:
                # curl built on GnuTLS checks the certificate after the handshake and just
                # hangs up: a client that does not trust the certificate ends here.
                self.log(f"{_peer(client_address)} - closed the connection without a request")
        finally:
            with self._lock:
                self._connections.pop(descriptor, None)
            connection.close()

    def handle_error(self, request: object, client_address: object) -> None:
        # A fault of this server, not the client's: into the log, with where it happened.
        self.log(f"{_peer(client_address)} - internal error: {traceback.format_exc(limit=-3)}")

    def request_started(self) -> None:
        with self._lock:
            self._busy += 1

    def request_finished(self) -> None:
        with self._lock:
            self._busy -= 1
            self._lock.notify_all()

    def stop(self, grace_seconds: float) -> None:
        """Stop accepting, let requests in flight finish for `grace_seconds`, cut off the rest."""
        self.stopping = True
        self.shutdown()
        deadline = time.monotonic() + grace_seconds
        with self._lock:
            while self._busy and (remaining := deadline - time.monotonic()) > 0:
                self._lock.wait(remaining)
            for backend in self.backends:
                _kill(backend)
            for descriptor in self._connections:
                # shutdown() through a duplicate descriptor: the handler thread may be inside an
                # SSL read on the connection itself, and the socket underneath is what must end.
                with contextlib.suppress(OSError), socket.socket(fileno=os.dup(descriptor)) as twin:
                    twin.shutdown(socket.SHUT_RDWR)
        self.server_close()


def _peer(client_address: object) -> str:
    if isinstance(client_address, tuple) and client_address:
        return str(client_address[0])
    return str(client_address)


def _printable(text: str, limit: int = 300) -> str:
    shown = text.encode("ascii", "backslashreplace").decode()
    shown = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in shown)
    return shown if len(shown) <= limit else shown[:limit] + "..."


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mlopsctl-githost"
    sys_version = ""
    timeout = SOCKET_TIMEOUT_SECONDS

    def setup(self) -> None:
        super().setup()
        self.requests = 0
        self._status: int | None = None
        self._sent = 0
        self._started = 0.0
        self._note = ""
        self._expects_continue = False
        self._busy = False

    @property
    def _host(self) -> _Server:
        return cast(_Server, self.server)

    # One log line per request, written when the request is done (status and size known).
    def handle_one_request(self) -> None:
        self._status = None
        self._sent = 0
        self._note = ""
        self._expects_continue = False
        self.path = ""
        try:
            super().handle_one_request()
        except Exception as error:
            self.close_connection = True
            self._note = self._note or f"{type(error).__name__}: {error}"
            raise
        finally:
            if self._busy:
                self._busy = False
                self._host.request_finished()
                self._log_request_line()
            if self._host.stopping:
                self.close_connection = True

    def _log_request_line(self) -> None:
        elapsed = time.monotonic() - self._started
        note = f" ({_printable(self._note)})" if self._note else ""
        status = "-" if self._status is None else str(self._status)
        # A request line that could not be parsed has no method and path: show it as it came.
        target = self.path or self.requestline
        self._host.log(
            f"{_peer(self.client_address)} {self.command or '-'} {_printable(target)} "
            f"{status} {self._sent}B {elapsed:.3f}s{note}"
        )

    def parse_request(self) -> bool:
        self.requests += 1
        self._started = time.monotonic()
        self._busy = True
        self._host.request_started()
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        # 100 Continue is sent only once the request is known to be served (see _body_pieces):
        # a push without a token is refused before the client sends its pack.
        self._expects_continue = True
        return True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self._status = int(code) if str(code).isdigit() else None

    def log_message(self, format: str, *args: object) -> None:
        pass  # the request's own line says it all (handle_one_request)

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        target = route(self.command, self.path, self._host.repositories)
        if isinstance(target, Refusal):
            headers = {"Allow": target.allow} if target.allow else {}
            self._reply(target.status, target.reason, headers)
            return
        user = None
        if target.pushes:
            user = self._authorised_user()
            if user is None:
                self._reply(
                    401,
                    "pushes need a token: Authorization: Basic with the token as password",
                    {"WWW-Authenticate": f'Basic realm="{REALM}"'},
                )
                return
        try:
            body = self._body_framing()
        except _ClientError as error:
            self._reply(error.status, error.reason)
            return
        self._run_backend(target, user, body)

    def _authorised_user(self) -> str | None:
        """The user name of a request that carries the token, else None (compared in constant
        time, so the token cannot be guessed byte by byte from response times)."""
        scheme, _, credentials = self.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, separator, password = decoded.partition(b":")
        if not separator or not hmac.compare_digest(password, self._host.token):
            return None
        name = user.decode("ascii", errors="replace")
        return name if _USER_NAME.match(name) else "git"

    def _body_framing(self) -> int | None:
        """The request body's length, or None for a chunked body (read as it comes)."""
        encoding = self.headers.get("Transfer-Encoding", "").strip().lower()
        length = self.headers.get("Content-Length")
        if encoding:
            if encoding != "chunked":
                raise _ClientError(501, f"transfer encoding {encoding!r} is not served")
            return None
        if length is None:
            return 0
        if not length.strip().isdigit():
            raise _ClientError(400, "Content-Length is not a number")
        size = int(length)
        if size > MAX_REQUEST_BODY_BYTES:
            raise _ClientError(413, f"request body over {MAX_REQUEST_BODY_BYTES} bytes")
        return size

    def _body_pieces(self, length: int | None) -> Iterator[bytes]:
        """The request body, a piece at a time, decoded from chunked framing where sent so."""
        if self._expects_continue:
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length is not None:
            remaining = length
            while remaining:
                piece = self.rfile.read(min(PIECE_BYTES, remaining))
                if not piece:
                    raise _ClientError(400, "request body ended early")
                remaining -= len(piece)
                yield piece
            return
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _ClientError(400, "malformed chunk in request body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers: git sends none, and none would change what is served
                return
            total += size
            if total > MAX_REQUEST_BODY_BYTES:
                raise _ClientError(413, f"request body over {MAX_REQUEST_BODY_BYTES} bytes")
            remaining = size
            while remaining:
                piece = self.rfile.read(min(PIECE_BYTES, remaining))
                if not piece:
                    raise _ClientError(400, "request body ended early")
                remaining -= len(piece)
                yield piece
            if self.rfile.readline(1024).strip():
                raise _ClientError(400, "malformed chunk in request body")

    def _backend_environment(
        self, target: Route, user: str | None, length: int | None
    ) -> dict[str, str]:
        environment = {
            "PATH": os.environ.get("PATH", os.defpath),
            # The root is the repository itself: no request can name anything outside it.
            "GIT_PROJECT_ROOT": str(target.repository),
            "PATH_INFO": target.service_path,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": "GET" if self.command == "HEAD" else self.command,
            "QUERY_STRING": target.query,
            "REMOTE_ADDR": _peer(self.client_address),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            # Pushes are checked here (token) so http-backend may take them; the repository is
            # the one this host was told to serve, whoever owns its files.
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
            "GIT_CONFIG_KEY_1": "safe.directory",
            "GIT_CONFIG_VALUE_1": str(target.repository),
        }
        if length is not None:
            environment["CONTENT_LENGTH"] = str(length)
        if user is not None:
            environment["REMOTE_USER"] = user
        for header, variable in (
            ("Content-Type", "CONTENT_TYPE"),
            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
        ):
            value = self.headers.get(header)
            if value is not None and _HEADER_VALUE.match(value):
                environment[variable] = value.strip()
        protocol = self.headers.get("Git-Protocol")
        if protocol is not None and _GIT_PROTOCOL.match(protocol):
            environment["HTTP_GIT_PROTOCOL"] = protocol
            environment["GIT_PROTOCOL"] = protocol
        return environment

    def _run_backend(self, target: Route, user: str | None, length: int | None) -> None:
        has_body = self.command == "POST" and length != 0
        backend = subprocess.Popen(
            ["git", "http-backend"],
            stdin=subprocess.PIPE if has_body else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._backend_environment(target, user, length),
            cwd=target.repository,
            bufsize=0,
        )
        with self._host._lock:
            self._host.backends.add(backend)
        watchdog = threading.Timer(BACKEND_TIMEOUT_SECONDS, _kill, (backend,))
        watchdog.daemon = True
        watchdog.start()
        errors = _Tail(cast(IO[bytes], backend.stderr))
        try:
            early = b""
            if has_body:
                try:
                    early = self._feed(backend, self._body_pieces(length))
                except _ClientError as error:
                    self._reply(error.status, error.reason)
                    return
            self._relay(backend, early)
        except (OSError, TimeoutError) as error:
            # The client went away or stalled past the socket timeout: nothing more to send.
            self.close_connection = True
            self._note = f"connection lost: {error}"
            self._status = self._status or 499
        finally:
            watchdog.cancel()
            _kill(backend)
            backend.wait()
            errors.join()
            with self._host._lock:
                self._host.backends.discard(backend)
            for stream in (backend.stdin, backend.stdout):
                if stream is not None:
                    stream.close()
            if backend.returncode not in (0, None) and not self._note:
                self._note = f"git http-backend exited {backend.returncode}: {errors.text()}"

    def _feed(self, backend: subprocess.Popen[bytes], pieces: Iterator[bytes]) -> bytes:
        """Write the request body to http-backend while keeping its output drained (a backend
        that writes progress before it has read everything must never wait on this server)."""
        stdin = cast(IO[bytes], backend.stdin)
        stdout = cast(IO[bytes], backend.stdout)
        os.set_blocking(stdin.fileno(), False)
        early = bytearray()
        pending = b""
        body_done = False
        with selectors.DefaultSelector() as selector:
            selector.register(stdin.fileno(), selectors.EVENT_WRITE)
            selector.register(stdout.fileno(), selectors.EVENT_READ)
            while True:
                if not pending and not body_done:
                    pending = next(pieces, b"")
                    body_done = not pending
                if body_done and not pending:
                    break
                events = selector.select(SOCKET_TIMEOUT_SECONDS)
                if not events:
                    raise _ClientError(504, "git http-backend stopped reading the request")
                for key, _mask in events:
                    if key.fd == stdout.fileno():
                        output = os.read(key.fd, PIECE_BYTES)
                        if not output:
                            selector.unregister(key.fd)
                            continue
                        early += output
                        if len(early) > MAX_EARLY_OUTPUT_BYTES:
                            raise _ClientError(502, "git http-backend said too much too early")
                    else:
                        try:
                            written = os.write(key.fd, pending)
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            # http-backend answered without reading all (an error it reports
                            # itself); the unread rest of the body ends this connection.
                            self.close_connection = True
                            body_done, pending = True, b""
                            break
                        pending = pending[written:]
        stdin.close()
        return bytes(early)

    def _relay(self, backend: subprocess.Popen[bytes], early: bytes) -> None:
        """http-backend's CGI answer as the HTTP response, its body streamed as it comes."""
        stdout = cast(IO[bytes], backend.stdout)
        buffered = early
        while b"\r\n\r\n" not in buffered and b"\n\n" not in buffered:
            output = os.read(stdout.fileno(), PIECE_BYTES)
            if not output or len(buffered) > MAX_BACKEND_HEADER_BYTES:
                self._reply(502, "git http-backend gave no answer")
                return
            buffered += output
        separator = b"\r\n\r\n" if b"\r\n\r\n" in buffered else b"\n\n"
        head, _, body = buffered.partition(separator)
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            name, value = name.strip(), value.strip()
            if name.lower() == "status":
                status = int(value.split()[0]) if value[:3].isdigit() else 502
            elif name.lower() not in _HOP_BY_HOP and _HEADER_NAME.match(name):
                headers.append((name, value))
        length = next((v for n, v in headers if n.lower() == "content-length"), None)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        while True:
            if body:
                self._sent += len(body)
                self.wfile.write(
                    body if length is not None else b"%x\r\n%s\r\n" % (len(body), body)
                )
            body = os.read(stdout.fileno(), PIECE_BYTES)
            if not body:
                break
        if length is None:
            self.wfile.write(b"0\r\n\r\n")

    def _reply(self, status: int, reason: str, headers: Mapping[str, str] | None = None) -> None:
        body = f"{reason}\n".encode()
        if self.command == "POST":
            # The request body may still be on the wire, unread: this connection cannot go on.
            self.close_connection = True
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self._sent += len(body)
        self._note = self._note or reason


class _Tail:
    """The last few KB a process writes to a stream, read in a thread of its own (a backend
    that fills its stderr pipe would otherwise stall)."""

    def __init__(self, stream: IO[bytes], keep: int = 4096) -> None:
        self._stream = stream
        self._keep = keep
        self._data = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with self._stream:
            while piece := self._stream.read(PIECE_BYTES):
                self._data += piece
                del self._data[: -self._keep]

    def join(self) -> None:
        self._thread.join(timeout=5)

    def text(self) -> str:
        return _printable(self._data.decode(errors="replace").strip().replace("\n", " | "), 500)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()


def _server_context(certificate: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # HTTP/1.1 only: without this, curl (git) would offer h2 and this server speaks only 1.1.
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as error:
        raise LocalRunError(
            f"cannot load the git host's certificate {certificate} with key {key}: {error}"
        ) from error
    return context


class _Logger:
    """Log lines, one a line, UTC timestamps, from any thread."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._lock:
            self._stream.write(f"{stamp} githost: {line}\n")
            self._stream.flush()


class GitHost:
    """The git host, listening from construction on; `run_until` serves, `close` stops."""

    def __init__(
        self,
        listen: tuple[str, int],
        certificate: Path,
        key: Path,
        repositories: Mapping[str, Path],
        token: str,
        log: Log | None = None,
    ) -> None:
        if not token.strip():
            raise LocalRunError("the git host's push token is empty")
        context = _server_context(certificate, key)
        checked = checked_repositories(repositories)
        self._log = log or _Logger(sys.stderr)
        try:
            self._server = _Server(listen, context, checked, token.strip(), self._log)
        except OSError as error:
            raise LocalRunError(
                f"the git host cannot listen on {listen[0]}:{listen[1]}: {error.strerror}"
            ) from error
        self._thread: threading.Thread | None = None
        self._closed = False
        served = ", ".join(f"{path}(.git) -> {directory}" for path, directory in checked.items())
        self._log(f"listening on {_address_text(self.address)}: {served}")

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> GitHost:
        """Serve in a background thread (until `close`)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
            )
            self._thread.start()
        return self

    def run_until(self, stop: threading.Event) -> None:
        """Serve until `stop` is set, then stop cleanly."""
        self.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.close()

    def close(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            self._server.server_close()
        else:
            self._server.stop(grace_seconds)
            self._thread.join()
        self._log("stopped")

    def __enter__(self) -> GitHost:
        return self.start()

    def __exit__(self, *_exception: object) -> None:
        self.close()


def serve(
    listen: tuple[str, int],
    certificate: Path,
    key: Path,
    repositories: Mapping[str, Path],
    token: str,
    ready: threading.Event | None = None,
    *,
    stop: threading.Event | None = None,
    log: Log | None = None,
) -> None:
    """Serve `repositories` (URL path -> bare repository) on `listen` until `stop` is set
    (forever without one); `ready` is set once the socket listens."""
    host = GitHost(listen, certificate, key, repositories, token, log)
    if ready is not None:
        ready.set()
    host.run_until(stop or threading.Event())


def _address_text(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_listen(text: str) -> tuple[str, int]:
    """`ADDRESS:PORT` (`[v6]:PORT` for IPv6) as a socket address."""
    host, separator, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not separator or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise LocalRunError(f"--listen {text!r}: use ADDRESS:PORT, e.g. 10.214.0.2:443")
    return host, int(port)


def parse_repository(text: str) -> tuple[str, Path]:
    """`URL_PATH=BARE_REPOSITORY_DIR`."""
    url_path, separator, directory = text.partition("=")
    if not separator or not url_path or not directory:
        raise LocalRunError(
            f"--repository {text!r}: use URL_PATH=BARE_REPOSITORY_DIR, "
            "e.g. /example-org/mlops-platform.git=/srv/mlops-platform.git"
        )
    return url_path, Path(directory)


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise LocalRunError(f"cannot read the token file {path}: {error.strerror}") from error
    if not token:
        raise LocalRunError(f"the token file {path} is empty")
    return token


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlopsctl.localrun.githost",
        description="Serve bare git repositories over HTTPS (git's smart HTTP protocol).",
    )
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT to listen on")
    parser.add_argument("--certificate", required=True, type=Path, help="PEM certificate")
    parser.add_argument("--key", required=True, type=Path, help="PEM private key")
    parser.add_argument(
        "--repository",
        required=True,
        action="append",
        help="URL_PATH=BARE_REPOSITORY_DIR (repeatable)",
    )
    parser.add_argument(
        "--token-file", required=True, type=Path, help="file holding the token pushes need"
    )
    parser.add_argument("--log", type=Path, help="append log lines to this file, not stderr")
    arguments = parser.parse_args(argv)
    stop = threading.Event()

    def stop_serving(_signal: int, _frame: types.FrameType | None) -> None:
        stop.set()

    log_file: IO[str] | None = None
    try:
        repositories: dict[str, Path] = {}
        for text in arguments.repository:
            url_path, directory = parse_repository(text)
            if url_path in repositories:
                raise LocalRunError(f"--repository {url_path} is given twice")
            repositories[url_path] = directory
        listen = parse_listen(arguments.listen)
        token = read_token(arguments.token_file)
        if arguments.log is not None:
            log_file = arguments.log.open("a", encoding="utf-8")
        signal.signal(signal.SIGTERM, stop_serving)
        signal.signal(signal.SIGINT, stop_serving)
        serve(
            listen,
            arguments.certificate,
            arguments.key,
            repositories,
            token,
            stop=stop,
            log=_Logger(log_file or sys.stderr),
        )
    except LocalRunError as error:
        print(f"githost: {error}", file=sys.stderr)
        return 2
    finally:
        if log_file is not None:
            log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

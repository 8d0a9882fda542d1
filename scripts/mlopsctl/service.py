"""`mlopsctl serve`: webhooks wake the sync loop; a timer runs it anyway.

MLflow delivers webhooks best-effort and keeps no outbox, so a webhook only says "look now":
every pass is a full, level-triggered reconcile of the remote against the registry. One worker
thread runs the passes; wake-ups that arrive during a pass are folded into the next one, so a
burst of alias moves costs a few passes and a few commits, not one per move.
"""

from __future__ import annotations

import json
import random
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from mlopsctl import gitops, promotion, webhooks
from mlopsctl.config import CONFIG_FILENAME, Config, load_config
from mlopsctl.errors import MlopsctlError
from mlopsctl.registry import MlflowRegistry
from mlopsctl.toolchain import Toolchain

# Content-Length digits read at all: 20 are far past any body taken, and int() stays cheap.
MAX_LENGTH_DIGITS = 20
# The longest a pass may take before /healthz calls the worker stuck. Nothing in a pass has a
# timeout of its own (git clone and push have none), so this is the allowance: a clone, a render
# per environment and 20 pushes with their back-off take well under a minute on a big repository.
PASS_TIMEOUT_SECONDS = 300.0
# Passes missed in a row, at the timer's interval, before /healthz answers 503.
MISSED_PASSES = 3


class BranchMismatch(MlopsctlError):
    """The reconciled branch's mlopsctl.yaml promotes to another branch."""


def branch_config(remote: str, branch: str) -> Config:
    """mlopsctl.yaml as `branch` of `remote` holds it, refused unless it promotes to `branch`.

    The branch the service reconciles and the one its commits go to must be the same: a clone of
    another branch pushed to promotion.branch would carry that branch's unreviewed commits there.
    """
    with tempfile.TemporaryDirectory(prefix="mlopsctl-config-") as scratch:
        # Only the tip is needed, and no checkout: the one file is read from the object store.
        checkout = Path(scratch) / "repository"
        completed = gitops.git(
            Path(scratch),
            "clone",
            "--quiet",
            "--no-tags",
            "--no-checkout",
            "--depth=1",
            "--single-branch",
            "--branch",
            branch,
            remote,
            str(checkout),
            check=False,
        )
        if completed.returncode != 0:
            raise gitops.GitError(
                f"cannot read {CONFIG_FILENAME} of {remote} (branch {branch}): "
                f"{completed.stderr.strip()}"
            )
        text = gitops.file_at(checkout, "HEAD", CONFIG_FILENAME)
        if text is None:
            raise MlopsctlError(f"{remote} has no {CONFIG_FILENAME} on branch {branch}")
        (checkout / CONFIG_FILENAME).write_text(text, encoding="utf-8")
        config = load_config(checkout)
    if config.promotion.branch != branch:
        raise BranchMismatch(
            f"the promoter reconciles branch {branch!r} (--branch / MLOPSCTL_BRANCH) but "
            f"{CONFIG_FILENAME} on it promotes to branch {config.promotion.branch!r} "
            f"(promotion.branch): they must be the same branch, or commits of {branch!r} would "
            f"be pushed to {config.promotion.branch!r}"
        )
    return config


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.promotions = Counter(
            "mlopsctl_promotions",
            "Pins moved or refused, by environment, model and result",
            ["environment", "model", "result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mlopsctl_promotion_duration_seconds",
            "Duration of passes that landed a promotion",
            buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.webhooks = Counter(
            "mlopsctl_webhook_requests",
            "Webhook requests by result",
            ["result"],
            registry=self.registry,
        )
        self.passes = Counter(
            "mlopsctl_reconcile_passes",
            "Reconcile passes by trigger and result",
            ["trigger", "result"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            "mlopsctl_last_successful_reconcile_timestamp_seconds",
            "Unix time of the last pass that completed",
            registry=self.registry,
        )
        self.out_of_step = Gauge(
            "mlopsctl_pins_out_of_step",
            "Pins on the branch that differ from their alias after the last pass "
            "(refused, invalid, or waiting in a pull request)",
            registry=self.registry,
        )


@dataclass
class Settings:
    remote: str
    branch: str
    registry: MlflowRegistry
    toolchain: Toolchain
    webhook_secret: str = field(repr=False)  # never in a log or a traceback
    interval_seconds: float = 60.0
    max_attempts: int = 20
    log: Callable[[str], None] = print
    pass_timeout_seconds: float = PASS_TIMEOUT_SECONDS
    # Reads the branch's mlopsctl.yaml before each pass and refuses it unless promotion.branch is
    # `branch`; the pass then clones and pushes the branch that config names. `serve` always sets
    # branch_config; None lets the pass read the config from its own clone, unchecked (for tests
    # that replace the whole pass).
    read_config: Callable[[str, str], Config] | None = None

    @property
    def health_deadline_seconds(self) -> float:
        """Seconds without a finished pass after which the worker counts as stuck."""
        return MISSED_PASSES * self.interval_seconds + self.pass_timeout_seconds


@dataclass
class Reconciler:
    """One worker per repository: runs passes one at a time, folding wake-ups together."""

    settings: Settings
    metrics: Metrics
    landing: promotion.Landing
    _condition: threading.Condition = field(default_factory=threading.Condition)
    _pending: str | None = None
    _stopping: bool = False
    passes: int = 0
    # When the last pass ended, successfully or not (or when the worker was made, before one).
    last_finished: float = field(default_factory=time.monotonic)

    def seconds_since_last_pass(self) -> float:
        return time.monotonic() - self.last_finished

    def wake(self, trigger: str) -> None:
        with self._condition:
            self._pending = self._pending or trigger
            self._condition.notify()

    def stop(self) -> None:
        """Let the pass in flight finish; start no other."""
        with self._condition:
            self._stopping = True
            self._condition.notify()

    def run_forever(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
                trigger, self._pending = self._pending, None
            if trigger is not None:
                self._supervised(trigger)

    def _supervised(self, trigger: str) -> None:
        """One pass that no error ends the worker with: it is counted, logged, and the next pass
        comes at the next wake-up, as after an unreachable remote."""
        try:
            self.reconcile(trigger)
        except Exception as error:
            # A bug or an answer nobody foresaw (a truncated JSON body, a reset connection): the
            # thread must live on, or webhooks get 202 and nothing ever reconciles again.
            self.metrics.passes.labels(trigger, "error").inc()
            self.settings.log(
                f"reconcile ({trigger}) failed unexpectedly: {type(error).__name__}: {error}"
            )
        finally:
            self.last_finished = time.monotonic()

    def reconcile(self, trigger: str) -> None:
        started = time.perf_counter()
        settings = self.settings
        try:
            config = (
                settings.read_config(settings.remote, settings.branch)
                if settings.read_config is not None
                else None
            )
            report = promotion.run(
                config,
                settings.registry,
                settings.toolchain,
                settings.remote,
                self.landing,
                branch=settings.branch,
                source="webhook" if trigger == "webhook" else "reconcile",
            )
        except MlopsctlError as error:
            self.metrics.passes.labels(trigger, "error").inc()
            settings.log(f"reconcile ({trigger}) failed: {error}")
            return
        finally:
            self.passes += 1
        landed = False
        out_of_step = len(report.refused)
        for refusal in report.refused:
            environment, _, rest = refusal.partition(": ")
            self.metrics.promotions.labels(environment, rest.partition("@")[0], "refused").inc()
        for outcome in report.outcomes:
            if not outcome.ok:
                result = "invalid"
            elif outcome.branch:
                result = "proposed"
            elif outcome.commit:
                result = "committed"
            else:
                result = "unchanged"
            landed = landed or result in ("committed", "proposed")
            if result in ("invalid", "proposed"):
                out_of_step += len(outcome.changes)
            for change in outcome.changes:
                self.metrics.promotions.labels(outcome.environment, change.key, result).inc()
            settings.log(f"reconcile ({trigger}): {outcome.environment}: {outcome.result}")
        for line in report.refused + report.notes:
            settings.log(f"reconcile ({trigger}): {line}")
        if landed:
            self.metrics.duration.observe(time.perf_counter() - started)
        self.metrics.out_of_step.set(out_of_step)
        self.metrics.last_success.set(time.time())
        self.metrics.passes.labels(trigger, "ok").inc()


def ready(settings: Settings) -> tuple[bool, dict[str, str]]:
    """Whether the git remote and MLflow both answer, with what each said."""
    checks: dict[str, str] = {}
    try:
        completed = gitops.git_at(
            "ls-remote", "--heads", settings.remote, settings.branch, timeout_seconds=15
        )
        checks["git"] = "ok" if completed.returncode == 0 else completed.stderr.strip()[:200]
    except subprocess.TimeoutExpired:
        checks["git"] = "timed out"
    try:
        with urllib.request.urlopen(f"{settings.registry.base_url}/health", timeout=5) as response:
            checks["mlflow"] = "ok" if response.status == 200 else f"HTTP {response.status}"
    except OSError as error:
        checks["mlflow"] = str(getattr(error, "reason", error))
    return all(value == "ok" for value in checks.values()), checks


def handler_for(
    settings: Settings, metrics: Metrics, reconciler: Reconciler, replays: webhooks.ReplayMemory
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mlopsctl"

        def log_message(self, *_args: object) -> None:
            pass  # one log line per pass is what operators want, not one per request

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                # Alive means passes keep finishing: a dead or stuck worker gets the pod restarted.
                idle = reconciler.seconds_since_last_pass()
                if idle > settings.health_deadline_seconds:
                    self._json(
                        503,
                        {
                            "status": "stuck",
                            "error": f"no reconcile pass has finished for {idle:.0f} s",
                        },
                    )
                else:
                    self._json(200, {"status": "ok"})
            elif self.path == "/readyz":
                is_ready, checks = ready(settings)
                self._json(200 if is_ready else 503, {"ready": is_ready, "checks": checks})
            elif self.path == "/metrics":
                body = generate_latest(metrics.registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self._json(404, {"error": f"no such path {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/webhooks/mlflow":
                self._json(404, {"error": f"no such path {self.path}"})
                return
            try:
                status, result, message = self._receive()
            except OSError:
                raise  # the connection itself failed: there is no one to answer
            except Exception as error:
                # A request the checks did not foresee still gets an answer, and is counted.
                status, result, message = 500, "error", "the delivery could not be handled"
                self._refused(result, f"{message}: {type(error).__name__}")
            key = "error" if status >= 400 else "status"
            self._json(status, {key: message, "result": result})

        def _refused(self, result: str, reason: str) -> None:
            """Count a refused delivery and log why, who sent it and its id; never its body."""
            metrics.webhooks.labels(result).inc()
            delivery_id = self.headers.get(webhooks.DELIVERY_HEADER)
            # ascii() quotes and escapes the sender's text, so it cannot forge log lines.
            shown_id = ascii(delivery_id[:100]) if delivery_id is not None else "none"
            settings.log(
                f"webhook refused ({result}): {reason}; delivery {shown_id} "
                f"from {self.client_address[0]}"
            )

        def _receive(self) -> tuple[int, str, str]:
            """Read and verify one delivery: the HTTP status, result label and message."""
            lengths = self.headers.get_all("Content-Length") or []
            if not lengths:
                self.close_connection = True  # a body, if any (chunked?), stays unread
                self._refused("malformed", "no Content-Length")
                return 411, "malformed", "Content-Length is required"
            # Two different lengths are a request-smuggling pattern; the body is never read.
            if len(set(lengths)) > 1 or not webhooks.is_ascii_number(lengths[0], MAX_LENGTH_DIGITS):
                self.close_connection = True
                self._refused("malformed", "Content-Length is not one number in digits 0-9")
                return 400, "malformed", "Content-Length must be a number in digits 0-9"
            length = int(lengths[0])
            if length > webhooks.MAX_BODY_BYTES:
                self.close_connection = True
                self._refused("too_large", f"Content-Length {length}")
                return 413, "too_large", f"body over {webhooks.MAX_BODY_BYTES} bytes"
            body = self.rfile.read(length)
            headers = {name: self.headers.get(name, "") for name in webhooks.HEADERS}
            verdict = webhooks.verify(headers, body, settings.webhook_secret, replays)
            if verdict.status >= 400:
                self._refused(verdict.result, verdict.message)
            else:
                metrics.webhooks.labels(verdict.result).inc()
            if verdict.result == "accepted":
                reconciler.wake("webhook")
                settings.log(f"webhook: {verdict.event} for {verdict.model or 'a model'}: queued")
            return verdict.status, verdict.result, verdict.message

    return Handler


@dataclass
class Service:
    settings: Settings
    listen: tuple[str, int]
    metrics: Metrics = field(default_factory=Metrics)
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        landing = promotion.Landing(max_attempts=self.settings.max_attempts, log=self.settings.log)
        self.reconciler = Reconciler(self.settings, self.metrics, landing)
        handler = handler_for(self.settings, self.metrics, self.reconciler, webhooks.ReplayMemory())
        self.http = ThreadingHTTPServer(self.listen, handler)
        self.http.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self.http.server_address[1])

    def start(self) -> None:
        worker = threading.Thread(target=self.reconciler.run_forever, name="reconciler")
        timer = threading.Thread(target=self._timer, name="reconcile-timer", daemon=True)
        server = threading.Thread(target=self.http.serve_forever, name="http", daemon=True)
        self._threads = [worker, timer, server]
        for thread in self._threads:
            thread.start()
        self.reconciler.wake("startup")
        self.settings.log(
            f"serving on {self.listen[0]}:{self.port}, reconciling every "
            f"{self.settings.interval_seconds:g} s"
        )

    def _timer(self) -> None:
        interval = self.settings.interval_seconds
        # Jitter keeps replicas (and restarts) from reconciling in lockstep.
        while not self.stopped.wait(interval * random.uniform(0.9, 1.1)):
            self.reconciler.wake("timer")

    def stop(self) -> None:
        """Stop taking requests, finish the pass in flight, return."""
        self.stopped.set()
        self.http.shutdown()
        self.reconciler.stop()
        self._threads[0].join()
        self.http.server_close()
        self.settings.log("stopped")

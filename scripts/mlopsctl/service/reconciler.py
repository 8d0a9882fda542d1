"""`mlopsctl serve`: webhooks wake the sync loop; a timer runs it anyway.

MLflow delivers webhooks best-effort and keeps no outbox, so a webhook only says "look now":
every pass is a full, level-triggered reconcile of the remote against the registry. One worker
thread runs the passes; wake-ups that arrive during a pass are folded into the next one, so a
burst of alias moves costs a few passes and a few commits, not one per move.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import random
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlopsctl.base import git, inventory, timings
from mlopsctl.base.config import CONFIG_FILENAME, Config, load_config
from mlopsctl.base.errors import BranchMismatch, GitError, MlopsctlError, UnknownEnvironment
from mlopsctl.base.kubeapi import KubeApi
from mlopsctl.base.mirror import Mirror, mirror_directory
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.base.toolchain import Toolchain
from mlopsctl.promote import flows, live
from mlopsctl.promote.landing import OutcomeKind, Report
from mlopsctl.promote.live_cluster import EnvironmentReader
from mlopsctl.promote.live_status import REFUSED, UNREACHABLE
from mlopsctl.promote.pin_status import status_rows
from mlopsctl.service import webhooks
from mlopsctl.service.http import HttpLimits, HttpServer, PromoterApp, ReadinessCache
from mlopsctl.validate.engine import edit_findings

# The longest a pass's own work may take before /healthz calls the worker stuck: a clone, a
# render per environment and 20 pushes with their back-off take well under a minute on a big
# repository. Git's network commands each have a deadline on top (pass_allowance_seconds).
PASS_TIMEOUT_SECONDS = 300.0
# Network deadlines a failing pass can meet in a row before it ends: the clone or fetch, a push,
# the reset after it, and the next environment's push.
GIT_DEADLINES_PER_PASS = 4
# Passes missed in a row, at the timer's interval, before /healthz answers 503.
MISSED_PASSES = 3


def pass_allowance_seconds(git_timeout_seconds: float) -> float:
    """How long a pass may take when git's remote hangs at every step it is allowed to."""
    return PASS_TIMEOUT_SECONDS + GIT_DEADLINES_PER_PASS * git_timeout_seconds


def branch_config(
    remote: str,
    branch: str,
    environments: Collection[str] = (),
    credentials: git.Credentials = git.NO_CREDENTIALS,
) -> Config:
    """mlopsctl.yaml as `branch` of `remote` holds it, refused unless it promotes to `branch`
    and has every one of `environments` (those the promoter owns).

    The branch the service reconciles and the one its commits go to must be the same: a clone of
    another branch pushed to promotion.branch would carry that branch's unreviewed commits there.
    An owned environment the file does not name is a typo or a removed environment: the
    promoter would move nothing and say nothing, so it refuses instead.
    """
    with tempfile.TemporaryDirectory(prefix="mlopsctl-config-") as scratch:
        # Only the tip is needed, and no checkout: the one file is read from the object store.
        checkout = Path(scratch) / "repository"
        completed = git.git(
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
            credentials=credentials,
        )
        if completed.returncode != 0:
            raise GitError(
                f"cannot read {CONFIG_FILENAME} of {remote} (branch {branch}): "
                f"{completed.stderr.strip()}"
            )
        text = git.file_at(checkout, "HEAD", CONFIG_FILENAME)
        if text is None:
            raise MlopsctlError(f"{remote} has no {CONFIG_FILENAME} on branch {branch}")
        (checkout / CONFIG_FILENAME).write_text(text, encoding="utf-8")
        config = load_config(checkout)
    return checked_config(config, branch, environments)


def checked_config(config: Config, branch: str, environments: Collection[str] = ()) -> Config:
    """`config` (the branch's mlopsctl.yaml), refused unless it promotes to `branch` and has
    every one of `environments`: the rules `branch_config` states."""
    if config.promotion.branch != branch:
        raise BranchMismatch(
            f"the promoter reconciles branch {branch!r} (--branch / MLOPSCTL_BRANCH) but "
            f"{CONFIG_FILENAME} on it promotes to branch {config.promotion.branch!r} "
            f"(promotion.branch): they must be the same branch, or commits of {branch!r} would "
            f"be pushed to {config.promotion.branch!r}"
        )
    unknown = [name for name in environments if name not in config.environments]
    if unknown:
        raise UnknownEnvironment(
            f"the promoter owns environment(s) {', '.join(map(repr, unknown))} "
            f"(--environments / MLOPSCTL_ENVIRONMENTS) but {CONFIG_FILENAME} on branch "
            f"{branch!r} has only {', '.join(map(repr, config.environments))}"
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
        self.deployment_tags = Counter(
            "mlopsctl_deployment_tags",
            "Deployment tags (deployed.<env>) set or removed on model versions, and passes that "
            "could not write them",
            ["environment", "result"],
            registry=self.registry,
        )
        self.phase_seconds = Histogram(
            "mlopsctl_reconcile_phase_seconds",
            "Time each pass spent per phase: git fetch (the mirror's fetch), git (local git), "
            "plan (registry reads), validate, render, push, deployment tags, other",
            ["phase"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
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
    # The environments whose pins this promoter writes: one writer per pin, so each promoter
    # is told which are its own and never reads the others'.
    environments: tuple[str, ...]
    # How git authenticates to the remote (its token is never printed either).
    credentials: git.Credentials = field(default=git.NO_CREDENTIALS, repr=False)
    interval_seconds: float = 60.0
    max_attempts: int = 20
    log: Callable[[str], None] = print
    pass_timeout_seconds: float = PASS_TIMEOUT_SECONDS
    # Where the mirror of the remote is kept between passes (and restarts, on a volume that
    # outlives the container); None: a temporary directory for the service's lifetime.
    mirrors: Path | None = None
    # The cluster that runs the owned environments; with it, each pass ends by writing the
    # registry's deployment tags (deployed.<env>) for what runs there. None: no tags.
    kubeconfig: Path | None = None

    def __post_init__(self) -> None:
        if not self.environments:
            raise MlopsctlError("the promoter owns no environment: name at least one")
        if not math.isfinite(self.interval_seconds) or self.interval_seconds <= 0:
            raise MlopsctlError(
                f"the reconcile interval must be a positive, finite number of seconds, not "
                f"{self.interval_seconds}"
            )

    @property
    def health_deadline_seconds(self) -> float:
        """Seconds without a finished pass after which the worker counts as stuck."""
        return MISSED_PASSES * self.interval_seconds + self.pass_timeout_seconds


@dataclass
class Reconciler:
    """One worker per repository: runs passes one at a time, folding wake-ups together."""

    settings: Settings
    metrics: Metrics
    landing: flows.Landing
    # The remote's checkout every pass works on, kept between passes.
    mirror: Mirror
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

    @property
    def stopping(self) -> bool:
        return self._stopping

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
        """One pass on the mirror: fetched and reset to the branch's head, its mlopsctl.yaml
        checked, the pins landed, then the deployment tags written from the same checkout."""
        started = time.perf_counter()
        settings = self.settings
        with timings.measuring() as measured:
            try:
                with self.mirror.checkout(settings.branch) as clone:
                    config = checked_config(
                        load_config(clone), settings.branch, settings.environments
                    )
                    report = flows.run(
                        config,
                        settings.registry,
                        settings.toolchain,
                        settings.remote,
                        self.landing,
                        branch=settings.branch,
                        source="webhook" if trigger == "webhook" else "reconcile",
                        environments=settings.environments,
                        clone=clone,
                    )
                    self._record(trigger, report, time.perf_counter() - started)
                    if settings.kubeconfig is not None:
                        with timings.phase("deployment tags"):
                            self._record_deployments(trigger, settings.kubeconfig, clone, config)
            except MlopsctlError as error:
                self.metrics.passes.labels(trigger, "error").inc()
                settings.log(f"reconcile ({trigger}) failed: {error}")
            finally:
                self.passes += 1
                self._observe(measured, time.perf_counter() - started)

    def _observe(self, measured: timings.Timings, seconds: float) -> None:
        phases = dict(measured.seconds)
        phases["other"] = max(0.0, seconds - sum(phases.values()))
        for name, spent in phases.items():
            self.metrics.phase_seconds.labels(name).observe(spent)

    def _record_deployments(
        self, trigger: str, kubeconfig: Path, checkout: Path, config: Config
    ) -> None:
        """The deployment tags of every owned environment, from what its cluster runs. A
        failure here is logged and counted per environment; it never fails the promotion pass
        before it."""
        settings = self.settings
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        try:
            with contextlib.closing(KubeApi(kubeconfig)) as kube:
                found = inventory.scan(checkout, config.render_exclude)
                for environment in settings.environments:
                    try:
                        self._record_environment(kube, checkout, found, environment, now, trigger)
                    except MlopsctlError as error:
                        self._deployment_tags_failed(trigger, environment, str(error))
        except MlopsctlError as error:
            for environment in settings.environments:
                self._deployment_tags_failed(trigger, environment, str(error))

    def _record_environment(
        self,
        kube: KubeApi,
        checkout: Path,
        found: list[inventory.LocatedPin],
        environment: str,
        now: str,
        trigger: str,
    ) -> None:
        settings = self.settings
        rows = status_rows(inventory.model_pins(found, environment), settings.registry)
        joined = live.live_rows(
            checkout, "HEAD", rows, {environment: EnvironmentReader(kube, environment)}
        )
        unread = [row for row in joined if row.state in (UNREACHABLE, REFUSED)]
        if unread:
            # Nothing can be confirmed, so nothing moves; said every pass, or a promoter without
            # its Roles would never tag and never say why.
            self._deployment_tags_failed(trigger, environment, unread[0].detail)
            return
        for change in live.record_deployments(settings.registry, environment, joined, now):
            result = "removed" if change.value is None else "set"
            self.metrics.deployment_tags.labels(environment, result).inc()
            settings.log(f"deployment tags ({trigger}): {environment}: {change}")

    def _deployment_tags_failed(self, trigger: str, environment: str, reason: str) -> None:
        self.metrics.deployment_tags.labels(environment, "error").inc()
        self.settings.log(f"deployment tags ({trigger}): {environment}: not written: {reason}")

    def _record(self, trigger: str, report: Report, seconds: float) -> None:
        """Metrics and log lines from the pass's typed report."""
        log = self.settings.log
        promotions = self.metrics.promotions
        out_of_step = len(report.refusals) + len(report.failures)
        for refusal in report.refusals:
            promotions.labels(refusal.environment, refusal.model, "refused").inc()
        for failure in report.failures:
            promotions.labels(failure.environment, failure.key, OutcomeKind.FAILED.value).inc()
        for outcome in report.outcomes:
            if outcome.kind in (OutcomeKind.INVALID, OutcomeKind.PROPOSED):
                out_of_step += len(outcome.changes)
            for key in dict.fromkeys(change.key for change in outcome.changes) or (
                [outcome.key] if outcome.key and outcome.kind is not OutcomeKind.FAILED else []
            ):
                promotions.labels(outcome.environment, key, outcome.kind.value).inc()
            if outcome.kind is not OutcomeKind.FAILED:  # said with the failures below
                log(f"reconcile ({trigger}): {outcome.environment}: {outcome.result}")
        for line in [*map(str, report.refusals), *map(str, report.failures), *report.notes]:
            log(f"reconcile ({trigger}): {line}")
        if any(o.kind in (OutcomeKind.COMMITTED, OutcomeKind.PROPOSED) for o in report.outcomes):
            self.metrics.duration.observe(seconds)
        self.metrics.out_of_step.set(out_of_step)
        if report.failures:
            # The pass finished, but some items could not be landed: an error pass, so alerts on
            # the last successful pass see an outage that fails every item.
            self.metrics.passes.labels(trigger, "error").inc()
            return
        self.metrics.last_success.set(time.time())
        self.metrics.passes.labels(trigger, "ok").inc()


def ready(settings: Settings) -> tuple[bool, dict[str, str]]:
    """Whether the git remote and MLflow both answer, with what each said."""
    checks: dict[str, str] = {}
    try:
        completed = git.git_at(
            "ls-remote",
            "--heads",
            settings.remote,
            settings.branch,
            timeout_seconds=15,
            credentials=settings.credentials,
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


@dataclass
class Service:
    settings: Settings
    listen: tuple[str, int]
    metrics: Metrics = field(default_factory=Metrics)
    limits: HttpLimits = field(default_factory=HttpLimits)
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        landing = flows.Landing(
            max_attempts=self.settings.max_attempts,
            log=self.settings.log,
            credentials=self.settings.credentials,
            validator=edit_findings,
        )
        settings = self.settings
        self._scratch: str | None = None
        mirrors = settings.mirrors
        if mirrors is None:
            self._scratch = tempfile.mkdtemp(prefix="mlopsctl-mirrors-")
            mirrors = Path(self._scratch)
        remote = git.Remote(settings.remote, settings.credentials)
        self.reconciler = Reconciler(
            settings,
            self.metrics,
            landing,
            Mirror(mirror_directory(mirrors, remote), remote, settings.log),
        )
        readiness = ReadinessCache(lambda: ready(settings), self.limits.readiness_cache_seconds)
        app = PromoterApp(
            settings, self.metrics, self.reconciler, webhooks.ReplayMemory(), readiness, self.limits
        )
        try:
            self.http = HttpServer(app, self.listen, self.limits)
        except BaseException:
            # Nothing will stop a service that never started: what it made goes now.
            readiness.close()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self.http.port

    def start(self) -> None:
        worker = threading.Thread(target=self.reconciler.run_forever, name="reconciler")
        timer = threading.Thread(target=self._timer, name="reconcile-timer", daemon=True)
        self._threads = [worker, timer]
        for thread in self._threads:
            thread.start()
        self.http.start()
        self.reconciler.wake("startup")
        self.settings.log(
            f"serving on {self.listen[0]}:{self.port}, reconciling every "
            f"{self.settings.interval_seconds:g} s, for {', '.join(self.settings.environments)}"
        )

    def _timer(self) -> None:
        interval = self.settings.interval_seconds
        # Jitter keeps replicas (and restarts) from reconciling in lockstep.
        while not self.stopped.wait(interval * random.uniform(0.9, 1.1)):
            self.reconciler.wake("timer")

    def stop(self) -> None:
        """Finish the pass in flight, then stop serving HTTP (bounded), then return.

        HTTP stays up while the pass finishes, so the liveness probe keeps its answer through a
        long pass; webhooks meanwhile get 503 and MLflow delivers them again later."""
        self.stopped.set()
        self.reconciler.stop()
        if self._threads:
            self._threads[0].join()
        self.http.stop()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        self.settings.log("stopped")

"""Argo CD's part, for one environment: follow the branch its Applications name, render each
Application's path at the branch head, and sync them in wave order, waiting for each wave to be
healthy; PreSync hooks before an Application's resources, PostSync hooks once it is healthy;
prune what left Git where the sync policy says so; re-sync an automated Application when a new
commit changes its render. A stand-in: Argo CD's controller cannot run here.

Applications whose source is a Helm chart (the operators) are installed as the run's stand-ins
for them (`operators`); a chart with no stand-in is refused, naming the Application.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlopsctl.base.config import Config
from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.base.kustomize import render_root
from mlopsctl.base.resources import parse_render
from mlopsctl.base.toolchain import Toolchain
from mlopsctl.localrun import workloads
from mlopsctl.localrun.cluster import Cluster, Health

# Argo CD's apply order by kind (gitops-engine's kind ordering), for resources of one wave.
KIND_ORDER = [
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
]
RETRY_SECONDS = 30.0
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PersistentVolume",
}


@dataclass
class Application:
    name: str
    wave: int
    destination_namespace: str
    automated: bool
    prune: bool
    create_namespace: bool
    path: str | None = None
    chart: str | None = None
    value_files: tuple[str, ...] = ()
    # What the run shows: where it is in its sync.
    sync_status: Literal["Unknown", "Synced", "OutOfSync", "Syncing", "SyncFailed"] = "Unknown"
    health: Health = "Missing"
    message: str = ""
    revision: str = ""
    rendered: str = ""
    applied: set[tuple[str, str, str]] = field(default_factory=set)
    post_sync_pending: list[dict[str, Any]] = field(default_factory=list)


class Sync:
    def __init__(
        self,
        cluster: Cluster,
        config: Config,
        environment: str,
        git_directory: Path,
        workspace: Path,
        toolchain: Toolchain,
        chart_stand_ins: dict[str, Callable[[Application, Path], None]],
        log: Callable[[str], None],
        poll_seconds: float = 2.0,
        wave_timeout_seconds: float = 900.0,
        created_outside: Callable[[dict[str, Any]], list[tuple[str, str, str]]] | None = None,
        created_by_hand: frozenset[tuple[str, str, str]] = frozenset(),
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.environment = environment
        self.git_directory = git_directory
        self.workspace = workspace
        self.toolchain = toolchain
        self.chart_stand_ins = chart_stand_ins
        self.log = log
        self.poll_seconds = poll_seconds
        self.wave_timeout_seconds = wave_timeout_seconds
        # What makes objects besides manifests: operators (a CloudNativePG Cluster makes its
        # `-app` Secret), and people (the Secrets mlopsctl.yaml lists as created by hand).
        self.created_outside = created_outside or (lambda body: [])
        self.created_by_hand = created_by_hand
        self.applications: dict[str, Application] = {}
        self.branch = "main"
        # The last revision every Application synced to and was healthy at; the last one tried.
        self.revision = ""
        self.attempted = ""
        self._retry_at = 0.0
        self.error = ""
        self.synced_once = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._installed_charts: set[str] = set()

    # -- git -----------------------------------------------------------------------------------

    def _git(self, *arguments: str) -> str:
        completed = subprocess.run(
            ["git", f"--git-dir={self.git_directory}", *arguments],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise LocalRunError(f"git {' '.join(arguments)}: {completed.stderr.strip()}")
        return completed.stdout

    def head(self) -> str:
        return self._git("rev-parse", f"refs/heads/{self.branch}").strip()

    def checkout(self, revision: str) -> Path:
        """The tree of a commit, as Argo CD's repo server has it (read-only use)."""
        directory = self.workspace / "revisions" / revision
        if (directory / ".complete").exists():
            return directory
        directory.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", f"--git-dir={self.git_directory}", "archive", "--format=tar", revision],
            capture_output=True,
            check=False,
        )
        if archive.returncode != 0:
            raise LocalRunError(
                f"git archive {revision}: {archive.stderr.decode(errors='replace').strip()}"
            )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(directory, filter="data")
        (directory / ".complete").write_text(revision)
        return directory

    # -- rendering -----------------------------------------------------------------------------

    def _render(self, checkout: Path, root: str) -> list[dict[str, Any]]:
        result = render_root(checkout, root, self.toolchain, allow_network=False)
        if result.error:
            raise LocalRunError(f"{root}: does not render: {result.error}")
        if result.skipped:
            raise LocalRunError(
                f"{root}: needs the network to render ({'; '.join(result.network)})"
            )
        return [resource.body for resource in parse_render(root, result.output)]

    def read_applications(self, checkout: Path) -> list[Application]:
        applications: list[Application] = []
        for body in self._render(checkout, f"apps/{self.environment}"):
            if body.get("kind") != "Application":
                continue
            applications.append(self._application(body))
        branches = {app.revision for app in applications if app.revision}
        if len(branches) > 1:
            raise LocalRunError(
                f"apps/{self.environment}: Applications follow different revisions "
                f"{sorted(branches)}"
            )
        if branches:
            self.branch = branches.pop()
        return sorted(applications, key=lambda app: (app.wave, app.name))

    def _application(self, body: dict[str, Any]) -> Application:
        reference = workloads.reference_of(body)
        spec = body.get("spec") or {}
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        policy = spec.get("syncPolicy") or {}
        automated = policy.get("automated")
        options = set(policy.get("syncOptions") or [])
        app = Application(
            name=reference.name,
            wave=int(annotations.get("argocd.argoproj.io/sync-wave", "0")),
            destination_namespace=str((spec.get("destination") or {}).get("namespace", "")),
            automated=automated is not None,
            prune=bool((automated or {}).get("prune", False)),
            create_namespace="CreateNamespace=true" in options,
        )
        sources = spec.get("sources") or ([spec["source"]] if spec.get("source") else [])
        for index, source in enumerate(sources):
            field = f"spec.sources[{index}]" if "sources" in spec else "spec.source"
            if source.get("chart"):
                app.chart = str(source["chart"])
                app.value_files = tuple((source.get("helm") or {}).get("valueFiles") or [])
            elif source.get("ref"):
                continue  # a `$values` reference to this repository
            elif source.get("repoURL") == self.config.repository_url:
                app.path = str(source.get("path", ""))
                app.revision = str(source.get("targetRevision", "HEAD"))
            else:
                raise UnsupportedManifest(
                    reference,
                    f"{field}.repoURL",
                    f"{source.get('repoURL')} is not this repository and not a chart the run "
                    "stands in for",
                )
        if app.chart and app.chart not in self.chart_stand_ins:
            raise UnsupportedManifest(
                reference,
                "spec.sources",
                f"no stand-in for the chart {app.chart!r} in the local run",
            )
        return app

    def preflight(self) -> None:
        """Refuse, before anything starts, what the run could only fail on later: a workload
        field it cannot honour, and a ConfigMap, Secret or claim that nothing creates."""
        checkout = self.checkout(self.head())
        rendered: list[tuple[str, dict[str, Any]]] = []
        for app in self.read_applications(checkout):
            if app.path is not None:
                rendered.extend(
                    (app.destination_namespace, body) for body in self._render(checkout, app.path)
                )
        workloads.check_object_uses(
            rendered, self.created_outside, self.created_by_hand, self.environment
        )

    # -- syncing -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                head = self.head()
                # A revision that failed to sync is tried again, as Argo CD retries, but not in
                # a tight loop.
                due = head != self.revision and (
                    head != self.attempted or time.monotonic() >= self._retry_at
                )
                if due:
                    self.attempted = head
                    self._retry_at = time.monotonic() + RETRY_SECONDS
                    if self.sync(head):
                        self.revision = head
                        self.synced_once.set()
                else:
                    self._refresh_health()
            except (LocalRunError, OSError) as error:
                self.error = str(error)
                self.log(f"sync: {error}")
            self._stopping.wait(self.poll_seconds)

    def sync(self, revision: str) -> bool:
        """Sync every Application to `revision`, wave by wave; whether all became healthy."""
        checkout = self.checkout(revision)
        applications = self.read_applications(checkout)
        first = not self.revision
        for app in applications:
            known = self.applications.get(app.name)
            if known is not None:
                app.applied, app.rendered, app.sync_status, app.health = (
                    known.applied,
                    known.rendered,
                    known.sync_status,
                    known.health,
                )
            self.applications[app.name] = app
        for wave in sorted({app.wave for app in applications}):
            members = [app for app in applications if app.wave == wave]
            for app in members:
                if self._stopping.is_set():
                    return False
                self._sync_application(app, checkout, first)
            if not self._wait_healthy(members):
                if self._stopping.is_set():
                    return False
                self.error = f"wave {wave} did not become healthy: " + "; ".join(
                    f"{app.name}: {app.health} {app.message}"
                    for app in members
                    if app.health != "Healthy"
                )
                self.log(f"sync: {self.error}")
                return False
            for app in members:
                self._post_sync(app, checkout)
        self.error = ""
        return True

    def _sync_application(self, app: Application, checkout: Path, first: bool) -> None:
        if app.chart is not None:
            if app.chart not in self._installed_charts:
                app.sync_status = "Syncing"
                if app.create_namespace and app.destination_namespace:
                    self.cluster.ensure_namespace(app.destination_namespace)
                self.chart_stand_ins[app.chart](app, checkout)
                self._installed_charts.add(app.chart)
            app.sync_status = "Synced"
            return
        assert app.path is not None
        resources = self._render(checkout, app.path)
        rendered = repr(resources)
        if not first and rendered == app.rendered and app.sync_status == "Synced":
            return
        if not app.automated and app.rendered:
            app.sync_status = "OutOfSync"  # manual sync policy: a person syncs from the UI
            return
        app.sync_status = "Syncing"
        if app.create_namespace and app.destination_namespace:
            self.cluster.ensure_namespace(app.destination_namespace)
        for body in resources:
            metadata = body.setdefault("metadata", {})
            if body.get("kind") not in CLUSTER_SCOPED and not metadata.get("namespace"):
                metadata["namespace"] = app.destination_namespace
        hooks = [body for body in resources if _hook(body)]
        normal = [body for body in resources if not _hook(body)]
        try:
            for body in _ordered([body for body in hooks if _hook(body) == "PreSync"]):
                self._run_hook(app, body)
            wanted: set[tuple[str, str, str]] = set()
            for body in _ordered(normal):
                reference = workloads.reference_of(body)
                key = (reference.kind, reference.namespace, reference.name)
                wanted.add(key)
                self.cluster.apply(body, app.name)
            if app.prune:
                for kind, namespace, name in sorted(app.applied - wanted):
                    self.cluster.delete(kind, namespace, name)
            app.applied = wanted
        except (LocalRunError, UnsupportedManifest) as error:
            app.sync_status, app.health, app.message = "SyncFailed", "Degraded", str(error)
            self.log(f"sync: {app.name}: {error}")
            return
        app.rendered = rendered
        app.sync_status = "Synced"
        app.post_sync_pending = [body for body in hooks if _hook(body) == "PostSync"]

    def _run_hook(self, app: Application, body: dict[str, Any]) -> None:
        reference = workloads.reference_of(body)
        if reference.kind != "Job":
            raise UnsupportedManifest(
                reference, "metadata.annotations", "the local run runs Jobs as hooks only"
            )
        policy = ((body.get("metadata") or {}).get("annotations") or {}).get(
            "argocd.argoproj.io/hook-delete-policy", "BeforeHookCreation"
        )
        # BeforeHookCreation: the previous run's Job goes before the new one is created.
        self.cluster.delete("Job", reference.namespace, reference.name, wait=True)
        app.message = f"running {_hook(body)} hook Job/{reference.name}"
        self.cluster.apply(body, app.name)
        deadline = time.monotonic() + self.wave_timeout_seconds
        while not self._stopping.is_set():
            health, message = self.cluster.health("Job", reference.namespace, reference.name)
            if health == "Healthy":
                app.message = ""
                if "HookSucceeded" in policy:
                    self.cluster.delete("Job", reference.namespace, reference.name)
                return
            if health == "Degraded":
                raise LocalRunError(f"{_hook(body)} hook Job/{reference.name} failed: {message}")
            if time.monotonic() > deadline:
                raise LocalRunError(f"{_hook(body)} hook Job/{reference.name} did not finish")
            self._stopping.wait(0.5)

    def _post_sync(self, app: Application, checkout: Path) -> None:
        pending, app.post_sync_pending = app.post_sync_pending, []
        for body in _ordered(pending):
            try:
                self._run_hook(app, body)
            except (LocalRunError, UnsupportedManifest) as error:
                app.sync_status, app.health, app.message = "SyncFailed", "Degraded", str(error)
                self.log(f"sync: {app.name}: {error}")

    def _application_health(self, app: Application) -> tuple[Health, str]:
        if app.sync_status == "SyncFailed":
            return "Degraded", app.message
        if app.chart is not None:
            return ("Healthy", "") if app.sync_status == "Synced" else ("Progressing", "installing")
        worst: Health = "Healthy"
        messages = []
        order = {"Healthy": 0, "Suspended": 1, "Progressing": 2, "Missing": 3, "Degraded": 4}
        for kind, namespace, name in sorted(app.applied):
            health, message = self.cluster.health(kind, namespace, name)
            if health != "Healthy":
                messages.append(f"{kind}/{name}: {message}" if message else f"{kind}/{name}")
            if order[health] > order[worst]:
                worst = health
        return worst, "; ".join(messages)

    def _refresh_health(self) -> None:
        for app in list(self.applications.values()):
            if app.sync_status in ("Synced", "OutOfSync", "SyncFailed"):
                app.health, message = self._application_health(app)
                if app.sync_status != "SyncFailed":
                    app.message = message

    def _wait_healthy(self, members: list[Application]) -> bool:
        deadline = time.monotonic() + self.wave_timeout_seconds
        while not self._stopping.is_set():
            self._refresh_health()
            if all(app.health == "Healthy" for app in members):
                return True
            if (
                any(app.sync_status == "SyncFailed" for app in members)
                or time.monotonic() > deadline
            ):
                return False
            self._stopping.wait(0.5)
        return False


def _hook(body: dict[str, Any]) -> str | None:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    value = annotations.get("argocd.argoproj.io/hook")
    return str(value) if value else None


def _ordered(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(body: dict[str, Any]) -> tuple[int, int, str]:
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        wave = int(annotations.get("argocd.argoproj.io/sync-wave", "0"))
        kind = str(body.get("kind", ""))
        rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
        return wave, rank, str((body.get("metadata") or {}).get("name", ""))

    return sorted(resources, key=key)

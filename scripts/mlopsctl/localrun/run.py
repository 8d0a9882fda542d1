"""A local run of one environment: everything started, watched, reported and stopped.

    run = LocalRun(Settings(repository=..., environment="local"))
    run.start()                 # network, CA and git host, images, hand-made Secrets, sync
    run.wait_until_healthy()    # every Application Healthy (waves in order)
    run.create_job("base/trainer")   # as `kubectl create -k base/trainer`
    run.stop()                  # everything it made is gone

The repository the Applications name is served by the run's own git host (`githost`), under
that URL, with the run's CA: the promoter clones and pushes to it exactly as its manifest says,
and the sync follows its branch. By default it holds a snapshot of your working tree (your
uncommitted edits too); `Settings.git_repository` serves an existing bare repository instead
(its pushes stay in it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlopsctl.base import hand_made_secrets, toolchain
from mlopsctl.base.config import Config, load_config
from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.base.kustomize import render_root
from mlopsctl.base.resources import parse_render
from mlopsctl.localrun import (
    certificates,
    cgroups,
    images,
    network,
    network_policy,
    operators,
    runs,
    usage,
    workloads,
)
from mlopsctl.localrun.cluster import Cluster
from mlopsctl.localrun.kubelet import ContainerState, Pod, RunnableImage
from mlopsctl.localrun.model import ObjectReference
from mlopsctl.localrun.prometheus import PrometheusClient
from mlopsctl.localrun.sync import Application, Sync

REQUIRED_COMMANDS = ("ip", "nft", "git", "openssl", "prometheus", "promtool")


@dataclass(frozen=True)
class Forward:
    """A `kubectl port-forward` the run keeps open, to show a UI on the host."""

    title: str
    namespace: str
    service: str
    port: int
    local_port: int


DEFAULT_FORWARDS = (
    Forward("MLflow UI", "ml-platform", "mlflow-tracking", 5000, 5000),
    Forward("frontend", "ml-platform", "streamlit", 8501, 8501),
    Forward("model server", "ml-platform", "model-server", 8080, 8080),
    Forward("Prometheus", "monitoring", "kube-prometheus-stack-prometheus", 9090, 9090),
)


@dataclass
class Settings:
    repository: Path
    environment: str = "local"
    git_repository: Path | None = None
    state_directory: Path | None = None
    image_cache: Path | None = None
    # Local ports for the forwards; 0 takes any free port, None opens none.
    forwards: tuple[Forward, ...] | None = DEFAULT_FORWARDS
    # Prometheus: the manifests' scrape intervals unless overridden (tests use "2s").
    scrape_interval: str | None = None
    evaluation_interval: str = "30s"
    poll_seconds: float = 2.0
    log: Callable[[str], None] = lambda line: print(line, flush=True)
    keep_state: bool = False


@dataclass
class UrlCheck:
    """A URL a workload names (env var or arg) that points at a Service, asked from the pod."""

    workload: str
    source: str
    url: str
    status: int | None
    error: str = ""


@dataclass
class Snapshot:
    applications: list[Application]
    pods: list[Pod]
    notes: list[str] = field(default_factory=list)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LocalRunError(
            "the local run needs root (network namespaces, nftables, cgroups, mounts): "
            "run it with sudo"
        )
    missing = [command for command in REQUIRED_COMMANDS if shutil.which(command) is None]
    if missing:
        raise LocalRunError(
            f"missing commands: {', '.join(missing)} (Debian packages iproute2, nftables, git, "
            "openssl, prometheus: `make setup` installs them as root)"
        )


def snapshot_working_tree(repository: Path, destination: Path, branch: str) -> str:
    """A new bare repository at `destination` whose `branch` holds `repository`'s working tree
    as it is now (uncommitted and untracked files included, ignored ones not), on top of its
    history; the user's index, branches and files are not touched. Returns the commit."""
    # HEAD names the branch, so that a clone of the snapshot checks it out.
    subprocess.run(
        ["git", "init", "--quiet", "--bare", f"--initial-branch={branch}", str(destination)],
        check=True,
    )
    top = subprocess.run(
        ["git", "-C", str(repository), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=False,
    )
    if top.returncode != 0:
        raise LocalRunError(
            f"{repository} is not a git checkout: the run serves its history to Argo CD's stand-in"
        )
    index = destination / "snapshot-index"
    environment = {**os.environ, "GIT_INDEX_FILE": str(index)}
    work_tree = top.stdout.strip()

    def git(*arguments: str) -> str:
        completed = subprocess.run(
            ["git", "-C", work_tree, *arguments],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
        )
        if completed.returncode != 0:
            raise LocalRunError(f"git {' '.join(arguments)}: {completed.stderr.strip()}")
        return completed.stdout.strip()

    git("add", "--all")
    tree = git("write-tree")
    parent = subprocess.run(
        ["git", "-C", work_tree, "rev-parse", "--verify", "--quiet", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    commit = git(
        "-c",
        "user.name=mlopsctl up",
        "-c",
        "user.email=mlopsctl@localhost",
        "commit-tree",
        tree,
        *(["-p", parent] if parent else []),
        "-m",
        "local run: the working tree",
    )
    git("push", "--quiet", str(destination), f"{commit}:refs/heads/{branch}")
    index.unlink(missing_ok=True)
    return commit


class RunImages:
    """Image references -> what runs them: built from the declared context, or a stand-in."""

    def __init__(
        self, repository: Path, config: Config, cache: Path, log: Callable[[str], None]
    ) -> None:
        self.repository = repository
        self.config = config
        self.cache = cache
        self.log = log
        self.stand_ins: dict[str, RunnableImage] = {}
        self.built: dict[str, images.BuiltImage] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def image(self, reference: str, resource: ObjectReference, field: str) -> RunnableImage:
        if reference in self.stand_ins:
            return self.stand_ins[reference]
        build = self.config.image_build(reference)
        if build is None:
            raise UnsupportedManifest(
                resource,
                field,
                f"no build context for image {reference}: "
                "declare it under `images:` in mlopsctl.yaml",
            )
        with self._lock:
            lock = self._locks.setdefault(build.name, threading.Lock())
        with lock:
            if build.name not in self.built:
                started = time.monotonic()
                self.built[build.name] = images.build_image(
                    self.repository, build, self.cache, log=self.log
                )
                took = time.monotonic() - started
                if took > 2:
                    self.log(f"image {build.name}: built in {took:.0f} s (cached from now on)")
            return self.built[build.name]


class LocalRun:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = settings.log
        self.repository = settings.repository.resolve()
        self.config = load_config(self.repository)
        if settings.environment not in self.config.environments:
            raise LocalRunError(
                f"--env {settings.environment!r} is not one of {list(self.config.environments)}"
            )
        self.run_id = secrets.token_hex(3)
        self.run_lock: runs.RunLock | None = None
        self._state: Path | None = None
        self.toolchain = toolchain.resolve(toolchain.default_tools_dir(self.repository))
        self.network: network.RunNetwork | None = None
        self.cgroups: cgroups.CgroupDriver | None = None
        self.cluster: Cluster | None = None
        self.sync: Sync | None = None
        self.git_token = secrets.token_hex(20)
        self.git_host_process: subprocess.Popen[bytes] | None = None
        self.git_host_endpoint: network.Endpoint | None = None
        self.git_directory: Path | None = None
        self.forwards: dict[str, network.PortForward] = {}
        self.kube_state_metrics: operators.KubeStateMetrics | None = None
        self.prometheus_stack: operators.PrometheusStack | None = None
        self.images = RunImages(
            self.repository,
            self.config,
            settings.image_cache or images.default_cache_dir(),
            self.log,
        )
        self._reporter: threading.Thread | None = None
        self.usage: usage.Sampler | None = None
        self._stopping = threading.Event()
        self._last_report: dict[str, str] = {}
        self._reported_denials: set[str] = set()
        self.started_at = 0.0

    # -- start ---------------------------------------------------------------------------------

    @property
    def state(self) -> Path:
        """The run's own directory (TLS, the git host's repository, pods' volumes)."""
        if self._state is None:
            raise LocalRunError("the run has not started: it has no state directory yet")
        return self._state

    def start(self) -> None:
        _require_root()
        self.started_at = time.monotonic()
        # Held before anything of the run exists, so another run starting now never takes what
        # this one makes for a leftover.
        self.run_lock = runs.RunLock(self.run_id)
        try:
            self.network = network.RunNetwork(self.run_id, self.run_lock)
            for leftover in self.network.leftovers_removed:
                self.log(f"removed a leftover of an earlier run: {leftover}")
            self.cgroups = cgroups.detect()
            self._remove_leftover_directories_and_cgroups(self.cgroups)
            self._state = self.settings.state_directory or Path(
                tempfile.mkdtemp(prefix=f"mlopsctl-run-{self.run_id}-", dir="/var/tmp")
            )
            self._state.mkdir(parents=True, exist_ok=True)
            self.network.setup()
            self._start_git_host()
            self._prebuild_images()
            self._start_cluster()
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _remove_leftover_directories_and_cgroups(driver: cgroups.CgroupDriver) -> None:
        for directory in Path("/var/tmp").glob("mlopsctl-run-*"):
            run_id = directory.name.split("-")[2]
            if not runs.is_live(run_id):
                shutil.rmtree(directory, ignore_errors=True)
        for run in driver.leftover_runs():
            if not runs.is_live(run):
                driver.remove_run(run)

    def _branch(self) -> str:
        return self.config.promotion.branch

    def _start_git_host(self) -> None:
        assert self.network is not None
        url = urllib.parse.urlparse(self.config.repository_url)
        if url.scheme != "https" or not url.hostname:
            raise LocalRunError(
                f"repository.url {self.config.repository_url!r}: the run serves https URLs only"
            )
        if self.settings.git_repository is not None:
            self.git_directory = self.settings.git_repository.resolve()
        else:
            self.git_directory = self.state / "git" / "repository.git"
            snapshot_working_tree(self.repository, self.git_directory, self._branch())
        tls = self.state / "tls"
        authority = certificates.create_authority(tls, f"mlopsctl local run {self.run_id}")
        endpoint = self.network.add("git host", run_host=True)
        self.git_host_endpoint = endpoint
        certificate = certificates.issue(authority, tls, [url.hostname], [endpoint.address])
        self.ca_bundle = certificates.bundle_with_system_roots(
            authority, tls / "ca-certificates.crt"
        )
        token_file = self.state / "git" / "token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(self.git_token)
        token_file.chmod(0o600)
        log = (self.state / "git-host.log").open("ab")
        self.git_host_process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                endpoint.namespace,
                sys.executable,
                "-m",
                "mlopsctl.localrun.githost",
                "--listen",
                f"{endpoint.address}:{url.port or 443}",
                "--certificate",
                str(certificate.certificate),
                "--key",
                str(certificate.key),
                "--repository",
                f"{url.path}={self.git_directory}",
                "--token-file",
                str(token_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.git_host_name = url.hostname
        self.log(
            f"git host: {self.config.repository_url} served from {self.git_directory} "
            f"at {endpoint.address}"
        )

    def _render(self, root: str) -> list[dict[str, Any]]:
        result = render_root(self.repository, root, self.toolchain, allow_network=False)
        if result.error:
            raise LocalRunError(f"{root}: does not render: {result.error}")
        return [resource.body for resource in parse_render(root, result.output)]

    def _prebuild_images(self) -> None:
        """Build every image the environment's workloads name before the sync starts: the
        first run builds their virtualenvs (minutes), later runs find them cached."""
        overlays = self.repository / "overlays" / self.settings.environment
        wanted: dict[str, tuple[ObjectReference, str]] = {}
        for directory in sorted(
            path for path in overlays.iterdir() if (path / "kustomization.yaml").exists()
        ):
            for body in self._render(directory.relative_to(self.repository).as_posix()):
                if body.get("kind") not in workloads.WORKLOAD_KINDS:
                    continue
                spec = ((body.get("spec") or {}).get("template") or {}).get("spec") or {}
                for index, container in enumerate(
                    [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
                ):
                    wanted.setdefault(
                        str(container.get("image")),
                        (
                            workloads.reference_of(body),
                            f"spec.template.spec.containers[{index}].image",
                        ),
                    )
        for reference, (resource, field_path) in sorted(wanted.items()):
            self.images.image(reference, resource, field_path)

    def _start_cluster(self) -> None:
        assert (
            self.network is not None
            and self.cgroups is not None
            and self.git_host_endpoint is not None
        )
        self.cluster = Cluster(
            self.run_id,
            self.state,
            self.network,
            self.cgroups,
            self.images,
            self.ca_bundle,
            self.log,
            extra_hosts={self.git_host_name: self.git_host_endpoint.address},
        )
        self.cluster.start()
        self._create_hand_made_secrets()
        self.sync = Sync(
            self.cluster,
            self.config,
            self.settings.environment,
            self.git_directory or Path(),
            self.state,
            self.toolchain,
            {
                "cloudnative-pg": self._install_cloudnative_pg,
                "kube-prometheus-stack": self._install_prometheus_stack,
                "external-secrets": self._install_external_secrets,
            },
            self.log,
            poll_seconds=self.settings.poll_seconds,
            created_outside=operators.CloudNativePG.creates,
            created_by_hand=frozenset(
                ("Secret", secret.namespace, secret.name)
                for secret in self.config.secrets_created_by_hand(self.settings.environment)
            ),
        )
        self.sync.preflight()
        self.sync.start()
        if self.settings.forwards is not None:
            for forward in self.settings.forwards:
                self._open_forward(forward)
        self._reporter = threading.Thread(target=self._report_loop, name="reporter", daemon=True)
        self._reporter.start()
        self.usage = usage.Sampler(self.readings).start()

    def _create_hand_made_secrets(self) -> None:
        assert self.cluster is not None
        for secret in self.config.secrets_created_by_hand(self.settings.environment):
            self.cluster.ensure_namespace(secret.namespace)
            self.cluster.apply(hand_made_secrets.secret_object(secret, self.git_token), "")

    # -- chart stand-ins -----------------------------------------------------------------------

    def _install_cloudnative_pg(self, application: Application, checkout: Path) -> None:
        assert self.cluster is not None
        operator = operators.CloudNativePG()
        self.cluster.operators["Cluster"] = operator
        self.images.stand_ins.update(
            {f"cnpg-stand-in/{name}": operator.image for name in ("postgres",)}
        )
        self.cluster.notes.append(
            f"{application.name}: CloudNativePG's operator is stood in for: a Cluster runs "
            f"{operator.image.description} as its instance pod"
        )
        self._cnpg = operator

    def _install_prometheus_stack(self, application: Application, checkout: Path) -> None:
        assert self.cluster is not None and self.network is not None
        values = operators.chart_values(checkout, application.value_files)
        self.kube_state_metrics = operators.KubeStateMetrics(
            self.cluster, self.network.node_address
        )
        stack = operators.PrometheusStack(
            values,
            self.settings.scrape_interval,
            self.settings.evaluation_interval,
            self.kube_state_metrics.port,
        )
        self.prometheus_stack = stack
        for kind in stack.kinds:
            self.cluster.operators[kind] = stack
        self.images.stand_ins["prometheus-stand-in"] = stack.image
        stack.install(self.cluster)
        self.cluster.notes.append(
            f"{application.name}: Prometheus from Debian stands in for the chart's; Grafana and "
            "Alertmanager are not run; kube-state-metrics' series come from the run itself"
        )

    def _install_external_secrets(self, application: Application, checkout: Path) -> None:
        assert self.cluster is not None
        self.cluster.notes.append(
            f"{application.name}: External Secrets has no stand-in: an ExternalSecret in this "
            "environment is refused"
        )

    # -- port-forwards -------------------------------------------------------------------------

    def _open_forward(self, forward: Forward) -> None:
        cluster = self.cluster
        assert cluster is not None

        def pick() -> str | None:
            return cluster.ready_pod_namespace(forward.namespace, forward.service)

        try:
            opened = network.PortForward(forward.local_port, pick, forward.port)
        except OSError:
            opened = network.PortForward(0, pick, forward.port)
        self.forwards[forward.title] = opened

    def urls(self) -> dict[str, str]:
        return {
            title: f"http://localhost:{forward.local_port}"
            for title, forward in self.forwards.items()
        }

    # -- waiting and reporting -----------------------------------------------------------------

    def applications(self) -> list[Application]:
        return (
            sorted(self.sync.applications.values(), key=lambda app: (app.wave, app.name))
            if self.sync
            else []
        )

    def healthy(self) -> bool:
        apps = self.applications()
        return bool(apps) and all(
            app.health == "Healthy" and app.sync_status == "Synced" for app in apps
        )

    def wait_until_healthy(self, timeout: float = 900.0, revision: str | None = None) -> float:
        """Every Application Synced and Healthy (at `revision`, when given); the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if (
                self.sync is not None
                and self.sync.error
                and "did not become healthy" in self.sync.error
            ):
                pass
            if self.healthy() and (
                revision is None or (self.sync is not None and self.sync.revision == revision)
            ):
                return time.monotonic() - started
            time.sleep(0.25)
        raise LocalRunError(
            "the environment did not become healthy in time:\n" + "\n".join(self.status_lines())
        )

    def status_lines(self) -> list[str]:
        lines: list[str] = []
        cluster = self.cluster
        for app in self.applications():
            lines.append(
                f"wave {app.wave:>2}  {app.name:<28} {app.sync_status:<10} {app.health:<11} "
                f"{app.message}".rstrip()
            )
        if cluster is not None:
            for pod in sorted(cluster.pods.values(), key=lambda pod: (pod.namespace, pod.name)):
                restarts = sum(state.restarts for state in pod.containers.values())
                lines.append(
                    f"  pod {pod.namespace}/{pod.name:<52} {pod.summary():<26} restarts {restarts}"
                )
                for state in [*pod.init_containers.values(), *pod.containers.values()]:
                    # A container restarting after a failure says why it last ended, as
                    # `kubectl describe` shows its Last State.
                    if state.reason in (
                        "CrashLoopBackOff",
                        "OOMKilled",
                        "Error",
                        "StartError",
                        "CreateContainerConfigError",
                        "CreateContainerError",
                    ) or (state.last_termination and not state.ready):
                        lines.append(f"      {state.name}: {state.reason}: {_last_state(state)}")
                        for line in pod.log_tail(state.name, 5):
                            lines.append(f"        | {line}")
        return lines

    def _report_loop(self) -> None:
        while not self._stopping.wait(1.0):
            self._report_changes()

    def _report_changes(self) -> None:
        current: dict[str, str] = {}
        for app in self.applications():
            line = f"{app.sync_status} {app.health}"
            if app.health != "Healthy" and app.message:
                line += f": {app.message}"
            current[f"wave {app.wave} {app.name}"] = line
        if self.cluster is not None:
            for pod in list(self.cluster.pods.values()):
                summary = pod.summary()
                detail = ""
                for state in pod.containers.values():
                    if state.reason in (
                        "CrashLoopBackOff",
                        "OOMKilled",
                        "Error",
                        "CreateContainerConfigError",
                        "CreateContainerError",
                    ):
                        tail = pod.log_tail(state.name, 3)
                        logged = "; " + " / ".join(tail) if tail else ""
                        detail = f" ({state.name}: {_last_state(state)}{logged})"
                current[f"pod {pod.namespace}/{pod.name}"] = summary + detail
        for key, value in current.items():
            if self._last_report.get(key) != value:
                self.log(f"{key}: {value}")
        self._last_report = current
        if self.network is not None and self.cluster is not None:
            for denial in self.denials():
                if denial not in self._reported_denials:
                    self._reported_denials.add(denial)
                    self.log(f"blocked: {denial}")

    def denials(self) -> list[str]:
        """Connections the NetworkPolicies dropped (or that tried to leave the run), named."""
        if self.network is None or self.cluster is None:
            return []
        addresses = self.cluster.pod_addresses()
        named: list[str] = []
        for set_name in (network_policy.DENIED_SET, network_policy.OUTSIDE_SET):
            for denial in network_policy.parse_denials(self.network.list_set(set_name)):
                named.append(network_policy.describe_denial(denial, addresses))
        return sorted(set(named))

    def readings(self) -> list[usage.Reading]:
        """Every running container's use, from its cgroup (for `usage.Sampler`)."""
        if self.cluster is None:
            return []
        found: list[usage.Reading] = []
        for pod in list(self.cluster.pods.values()):
            containers = {
                c.name: c for c in (*pod.template.containers, *pod.template.init_containers)
            }
            for name, cgroup in list(pod.cgroups.items()):
                state = pod.containers.get(name) or pod.init_containers.get(name)
                if state is None or pod.phase == "Succeeded":
                    continue  # a finished Job's cgroup says nothing about use
                try:
                    throttling = cgroup.throttling()
                    found.append(
                        usage.Reading(
                            workload=f"{pod.owner.name}",
                            pod=pod.name,
                            container=name,
                            resources=containers[name].resources,
                            memory_bytes=cgroup.memory_bytes(),
                            peak_memory_bytes=cgroup.peak_memory_bytes(),
                            cpu_seconds=cgroup.cpu_seconds(),
                            oom_kills=state.oom_kills,
                            periods=throttling.periods,
                            throttled_periods=throttling.throttled_periods,
                            running=state.state == "running",
                        )
                    )
                except (OSError, LocalRunError):
                    continue  # the pod went away between listing and reading
        return found

    def prometheus(self) -> PrometheusClient | None:
        if self.prometheus_stack is None or self.cluster is None:
            return None
        address = self.prometheus_stack.address(self.cluster)
        return PrometheusClient(f"http://{address}:9090") if address else None

    # -- jobs by hand --------------------------------------------------------------------------

    def create_job(self, root: str, timeout: float = 900.0) -> Pod:
        """`kubectl create -k ROOT` for a root holding a Job (and what it needs, such as its
        NetworkPolicy); waits for the Job to finish and returns its last pod."""
        assert self.cluster is not None
        job_reference: ObjectReference | None = None
        for body in self._render(root):
            reference = workloads.reference_of(body)
            if reference.kind == "Job":
                job_reference = reference
                self.cluster.delete("Job", reference.namespace, reference.name, wait=True)
            self.cluster.apply(body, f"kubectl create -k {root}")
        if job_reference is None:
            raise LocalRunError(f"{root}: renders no Job")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health, message = self.cluster.health(
                "Job", job_reference.namespace, job_reference.name
            )
            if health in ("Healthy", "Degraded"):
                job = self.cluster.jobs[(job_reference.namespace, job_reference.name)]
                pod = job.pods[-1]
                if health == "Degraded":
                    raise LocalRunError(
                        f"{job_reference}: {message}\n"
                        + "\n".join(pod.log_tail(pod.template.containers[0].name, 20))
                    )
                return pod
            time.sleep(0.5)
        raise LocalRunError(f"{job_reference} did not finish in {timeout:.0f} s")

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything the run started and remove everything it made."""
        self._stopping.set()
        if self.usage is not None:
            self.usage.stop()
        if self.sync is not None:
            self.sync.stop()
        for forward in self.forwards.values():
            forward.close()
        if self.cluster is not None:
            self.cluster.stop()
        if self.kube_state_metrics is not None:
            self.kube_state_metrics.stop()
        if self.git_host_process is not None and self.git_host_process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.git_host_process.pid, signal.SIGTERM)
            try:
                self.git_host_process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.git_host_process.pid, signal.SIGKILL)
        if self.cgroups is not None:
            with contextlib.suppress(LocalRunError, OSError):
                self.cgroups.remove_run(self.run_id)
        if self.network is not None:
            self.network.teardown()
        if (
            self._state is not None
            and not self.settings.keep_state
            and self.settings.state_directory is None
        ):
            shutil.rmtree(self._state, ignore_errors=True)
        if self.run_lock is not None:
            self.run_lock.release()
            self.run_lock = None


def _last_state(state: ContainerState) -> str:
    """What a person needs on a failing container: why it last ended, and what happens now."""
    parts = [part for part in (state.last_termination, state.message) if part]
    return "; ".join(dict.fromkeys(parts)) or state.reason

"""Pods, as the kubelet runs them: network namespace, volumes, containers with their env and
users, probes, restarts with back-off, OOM kills, termination with a grace period.

A `Pod` asks its `PodEnvironment` (the run) for what lives outside it: ConfigMap and Secret
data, Services for its environment variables and hosts file, built images, claims. Its state
changes are reported through `PodEnvironment.pod_changed` (readiness moves Service endpoints
and Prometheus targets).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.localrun import launcher, workloads
from mlopsctl.localrun.cgroups import CgroupDriver, ContainerCgroup
from mlopsctl.localrun.model import (
    Container,
    Exec,
    FieldReference,
    HttpGet,
    KeyReference,
    KeyToPath,
    ObjectReference,
    PodAddress,
    PodTemplate,
    Probe,
    SecurityContext,
    TcpSocket,
    Volume,
)
from mlopsctl.localrun.network import Endpoint, RunNetwork

# The kubelet's back-off for restarting containers: 10 s doubling to 5 minutes, forgotten after
# 10 minutes of running well.
BACKOFF_INITIAL_SECONDS = 10.0
BACKOFF_MAXIMUM_SECONDS = 300.0
BACKOFF_RESET_SECONDS = 600.0
_HOST_DIRECTORIES = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class ImageRecipeLike(Protocol):
    @property
    def entrypoint(self) -> tuple[str, ...] | None: ...

    @property
    def cmd(self) -> tuple[str, ...] | None: ...

    @property
    def workdir(self) -> str: ...

    @property
    def user(self) -> str | None: ...


class RunnableImage(Protocol):
    """What the kubelet needs of an image: built from a Dockerfile (`images.BuiltImage`), or
    software of this machine standing in for an upstream image (PostgreSQL, Prometheus)."""

    @property
    def recipe(self) -> ImageRecipeLike: ...

    @property
    def passwd_lines(self) -> tuple[str, ...]: ...

    @property
    def group_lines(self) -> tuple[str, ...]: ...

    @property
    def environment(self) -> Mapping[str, str]: ...

    @property
    def python_prefix(self) -> Path | None: ...

    @property
    def venv(self) -> Path | None: ...

    @property
    def rootfs(self) -> Path: ...


class ContainerConfigError(LocalRunError):
    """What the kubelet calls CreateContainerConfigError: the container waits and is retried
    (a Secret that does not exist yet, say)."""


class PodEnvironment(Protocol):
    run_id: str
    state_directory: Path
    network: RunNetwork
    cgroups: CgroupDriver
    ca_bundle: Path | None

    def config_data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None: ...

    def service_links(self, namespace: str) -> dict[str, str]: ...

    def hosts_file(self, namespace: str, pod_name: str, pod_address: str) -> str: ...

    def image(self, reference: str, resource: ObjectReference, field: str) -> RunnableImage: ...

    def claim_directory(self, namespace: str, claim: str, resource: ObjectReference) -> Path: ...

    def pod_changed(self, pod: Pod) -> None: ...


@dataclass
class ContainerState:
    name: str
    state: Literal["waiting", "running", "terminated"] = "waiting"
    reason: str = "ContainerCreating"
    message: str = ""
    started: bool = False
    ready: bool = False
    restarts: int = 0
    exit_code: int | None = None
    last_termination: str = ""
    pid: int | None = None
    started_at: float | None = None
    oom_kills: int = 0
    # Probe failures of a running service: liveness at any time, readiness once it was ready.
    # Failures while it starts (startup probes, readiness before the first success) are what
    # those probes are for, so they are only counted.
    probe_failures: list[str] = field(default_factory=list)
    start_up_probe_failures: int = 0
    # Seconds from the container's first start to its first readiness (its own start-up time),
    # or, for a container that runs to completion (a Job's), to its successful end.
    start_up_seconds: float | None = None


class Pod:
    def __init__(
        self,
        name: str,
        namespace: str,
        owner: ObjectReference,
        template: PodTemplate,
        environment: PodEnvironment,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.owner = owner
        self.template = template
        self.environment = environment
        self.reference = ObjectReference("Pod", namespace, name)
        self.directory = environment.state_directory / "pods" / name
        self.endpoint: Endpoint | None = None
        self.phase: Literal["Pending", "Running", "Succeeded", "Failed"] = "Pending"
        self.containers = {c.name: ContainerState(c.name) for c in template.containers}
        self.init_containers = {c.name: ContainerState(c.name) for c in template.init_containers}
        self.cgroups: dict[str, ContainerCgroup] = {}
        self.created_at = time.time()
        self.deleting = False
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._threads: list[threading.Thread] = []
        self.error: str = ""
        # The pod template hash of the Deployment revision that made it ("" for Jobs).
        self.owner_hash = ""

    # -- what others read ----------------------------------------------------------------------

    @property
    def ip(self) -> str:
        return self.endpoint.address if self.endpoint else ""

    @property
    def ready(self) -> bool:
        return (
            self.phase == "Running"
            and not self.deleting
            and all(state.ready for state in self.containers.values())
        )

    def address(self) -> PodAddress:
        ports = tuple(port for container in self.template.containers for port in container.ports)
        return PodAddress(
            self.namespace, self.name, self.template.labels, self.ip, ports, self.ready
        )

    def log_path(self, container: str) -> Path:
        return self.directory / "logs" / f"{container}.log"

    def log_tail(self, container: str, lines: int = 10) -> list[str]:
        path = self.log_path(container)
        if not path.exists():
            return []
        with path.open("rb") as stream:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(max(0, size - 16384))
            text = stream.read().decode("utf-8", "replace")
        return text.splitlines()[-lines:]

    def summary(self) -> str:
        """One word for a status line, as `kubectl get pods` would say it."""
        if self.deleting:
            return "Terminating"
        for state in [*self.init_containers.values(), *self.containers.values()]:
            if state.state == "waiting" and state.reason not in (
                "ContainerCreating",
                "PodInitializing",
            ):
                return state.reason
            failed = state.reason in ("OOMKilled", "Error", "StartError")
            if state.state == "terminated" and failed and self.phase != "Succeeded":
                return state.reason
        if self.phase == "Running":
            return "Running" if self.ready else "NotReady"
        return self.phase

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / "logs").mkdir(exist_ok=True)
            self.endpoint = self.environment.network.add(f"{self.namespace}/{self.name}")
            self._write_pod_files()
            self._prepare_volumes()
        except (LocalRunError, OSError) as error:
            self.error = str(error)
            self.phase = "Failed"
            self.environment.pod_changed(self)
            return
        for container in self.template.init_containers:
            if not self._run_init_container(container):
                self.phase = "Failed"
                self.environment.pod_changed(self)
                return
        self.phase = "Running"
        self.environment.pod_changed(self)
        for container in self.template.containers:
            thread = threading.Thread(
                target=self._keep_running,
                args=(container,),
                name=f"{self.name}/{container.name}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _run_init_container(self, container: Container) -> bool:
        state = self.init_containers[container.name]
        while not self._stop.is_set():
            code = self._run_once(container, state, probes=False)
            if code == 0:
                return True
            if self.template.restart_policy == "Never" or code is None:
                return False
            self._back_off(state)
        return False

    def _keep_running(self, container: Container) -> None:
        state = self.containers[container.name]
        while not self._stop.is_set():
            code = self._run_once(container, state, probes=True)
            if self._stop.is_set():
                break
            policy = self.template.restart_policy
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                break
            self._back_off(state)
        self._settle_phase()

    def _settle_phase(self) -> None:
        with self._lock:
            states = list(self.containers.values())
            if self.deleting or not all(state.state == "terminated" for state in states):
                return
            failed = any(
                state.exit_code not in (0, None) or state.reason != "Completed" for state in states
            )
            self.phase = "Failed" if failed else "Succeeded"
        self.environment.pod_changed(self)

    def _back_off(self, state: ContainerState) -> None:
        ran_for = time.time() - (state.started_at or time.time())
        if ran_for > BACKOFF_RESET_SECONDS:
            state.restarts = 0
        delay = min(
            BACKOFF_INITIAL_SECONDS * 2 ** max(0, state.restarts - 1), BACKOFF_MAXIMUM_SECONDS
        )
        if state.reason not in ("CreateContainerConfigError",):
            state.last_termination = f"{state.reason} (exit code {state.exit_code})" + (
                f": {state.message}" if state.message else ""
            )
            state.state, state.reason = "waiting", "CrashLoopBackOff"
            state.message = f"back-off {delay:.0f}s restarting failed container"
        self.environment.pod_changed(self)
        self._stop.wait(delay)
        state.restarts += 1

    def _run_once(self, container: Container, state: ContainerState, probes: bool) -> int | None:
        """Create, start and wait for one instance of the container: its exit code, or None
        when it could not be created."""
        try:
            spec = self._launch_spec(container)
        except ContainerConfigError as error:
            state.state, state.reason, state.message = (
                "waiting",
                "CreateContainerConfigError",
                str(error),
            )
            state.exit_code = None
            self.environment.pod_changed(self)
            return 1
        except (UnsupportedManifest, LocalRunError) as error:
            state.state, state.reason, state.message = "waiting", "CreateContainerError", str(error)
            self.error = str(error)
            self.environment.pod_changed(self)
            return None
        cgroup = self._cgroup(container)
        spec.cgroup_procs = [str(path) for path in cgroup.procs_files()]
        spec_path = self.directory / f"{container.name}.launch.json"
        spec_path.write_text(spec.to_json())
        pid_path = Path(spec.pid_file)
        pid_path.unlink(missing_ok=True)
        oom_before = cgroup.oom_kills()
        log = self.log_path(container.name).open("ab")
        log.write(f"--- {time.strftime('%H:%M:%S')} starting {container.name}\n".encode())
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "mlopsctl.localrun.launcher", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        with self._lock:
            self._processes[container.name] = process
        pid = _wait_for_pid(pid_path, process)
        state.pid = pid
        state.state, state.reason, state.message = "running", "Running", ""
        state.started_at = time.time()
        state.started = container.startup_probe is None
        state.ready = False
        state.probe_failures = []
        state.start_up_probe_failures = 0
        self.environment.pod_changed(self)
        instance = threading.Event()
        watchers = [
            threading.Thread(
                target=self._watch_memory, args=(cgroup, oom_before, state, instance), daemon=True
            )
        ]
        if probes and pid is not None:
            watchers.append(
                threading.Thread(
                    target=self._probe_loop, args=(container, state, instance), daemon=True
                )
            )
        for watcher in watchers:
            watcher.start()
        code = process.wait()
        instance.set()
        with self._lock:
            self._processes.pop(container.name, None)
        state.pid = None
        state.ready = False
        state.state = "terminated"
        state.exit_code = code
        state.oom_kills = cgroup.oom_kills() - oom_before
        if state.oom_kills:
            limit = container.resources.memory_limit_bytes
            state.reason = "OOMKilled"
            state.message = (
                f"memory limit {_bytes(limit)} reached (peak {_bytes(cgroup.peak_memory_bytes())})"
            )
        elif (
            code == launcher.EXIT_CANNOT_START
            and state.started_at
            and time.time() - state.started_at < 5
        ):
            state.reason = "StartError"
            state.message = " ".join(self.log_tail(container.name, 2))
        else:
            state.reason = "Completed" if code == 0 else "Error"
            if code == 0 and self.template.restart_policy != "Always" and state.started_at:
                # A Job's container is done, not ready: its own time is its whole run.
                state.start_up_seconds = time.time() - state.started_at
        cgroup.kill_all(signal.SIGKILL)
        self.environment.pod_changed(self)
        return code

    def _watch_memory(
        self,
        cgroup: ContainerCgroup,
        oom_before: int,
        state: ContainerState,
        instance: threading.Event,
    ) -> None:
        # cgroup v1 OOM-kills one process (a worker, say); the kubelet on v2 kills the whole
        # container (memory.oom.group). Do as v2 does, so both report OOMKilled alike.
        while not instance.wait(0.25):
            if cgroup.oom_kills() > oom_before:
                cgroup.kill_all(signal.SIGKILL)
                return

    # -- probes --------------------------------------------------------------------------------

    def _probe_loop(
        self, container: Container, state: ContainerState, instance: threading.Event
    ) -> None:
        started_at = time.monotonic()
        counters: dict[str, tuple[int, int]] = {}
        next_run: dict[str, float] = {}
        probes = [
            (kind, probe)
            for kind, probe in (
                ("startup", container.startup_probe),
                ("readiness", container.readiness_probe),
                ("liveness", container.liveness_probe),
            )
            if probe is not None
        ]
        if container.readiness_probe is None:
            state.ready = state.started
            _note_ready(state)
            self.environment.pod_changed(self)
        while not instance.is_set() and not self._stop.is_set():
            now = time.monotonic()
            for kind, probe in probes:
                if kind != "startup" and not state.started:
                    continue
                if kind == "startup" and state.started:
                    continue
                due = next_run.get(kind, started_at + probe.initial_delay_seconds)
                if now < due:
                    continue
                next_run[kind] = now + probe.period_seconds
                ok, detail = self._probe(container, probe, state)
                if instance.is_set():
                    return
                successes, failures = counters.get(kind, (0, 0))
                successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
                counters[kind] = (successes, failures)
                if not ok and kind != "liveness" and state.start_up_seconds is None:
                    state.start_up_probe_failures += 1
                elif not ok:
                    state.probe_failures = [
                        *state.probe_failures[-9:],
                        f"{kind} probe failed: {detail}",
                    ]
                if kind == "startup":
                    if successes >= probe.success_threshold:
                        state.started = True
                        if container.readiness_probe is None:
                            state.ready = True
                            _note_ready(state)
                        self.environment.pod_changed(self)
                    elif failures >= probe.failure_threshold:
                        self._kill_for_probe(
                            container, state, f"startup probe failed {failures} times: {detail}"
                        )
                        return
                elif kind == "readiness":
                    if successes >= probe.success_threshold and not state.ready:
                        state.ready = True
                        _note_ready(state)
                        self.environment.pod_changed(self)
                    elif failures >= probe.failure_threshold and state.ready:
                        state.ready = False
                        self.environment.pod_changed(self)
                elif failures >= probe.failure_threshold:
                    self._kill_for_probe(
                        container, state, f"liveness probe failed {failures} times: {detail}"
                    )
                    return
            instance.wait(0.1)

    def _kill_for_probe(self, container: Container, state: ContainerState, why: str) -> None:
        state.message = why
        state.ready = False
        self.environment.pod_changed(self)
        self._terminate(container.name, self.template.termination_grace_seconds)

    def _probe(self, container: Container, probe: Probe, state: ContainerState) -> tuple[bool, str]:
        action = probe.action
        try:
            if isinstance(action, HttpGet):
                return _http_probe(self.ip, action, probe.timeout_seconds)
            if isinstance(action, TcpSocket):
                with socket.create_connection(
                    (self.ip, action.port), timeout=probe.timeout_seconds
                ):
                    return True, ""
            if isinstance(action, Exec):
                return self._exec_probe(container, action, probe.timeout_seconds, state)
        except (OSError, http.client.HTTPException) as error:
            return False, str(error) or type(error).__name__
        return False, "unknown probe"

    def _exec_probe(
        self, container: Container, action: Exec, timeout: float, state: ContainerState
    ) -> tuple[bool, str]:
        if state.pid is None:
            return False, "the container is not running"
        spec = self._launch_spec(container)
        exec_spec = launcher.ExecSpec(
            argv=list(action.command),
            env=spec.env,
            working_dir=spec.working_dir,
            uid=spec.uid,
            gid=spec.gid,
            groups=spec.groups,
            container_pid=state.pid,
            no_new_privileges=spec.no_new_privileges,
            cgroup_procs=[str(path) for path in self._cgroup(container).procs_files()],
        )
        path = self.directory / f"{container.name}.exec.json"
        path.write_text(exec_spec.to_json())
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "mlopsctl.localrun.launcher", str(path)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"command timed out after {timeout:g}s"
        output = (completed.stdout + completed.stderr).strip()[-200:]
        return completed.returncode == 0, f"exit code {completed.returncode}: {output}"

    # -- stopping ------------------------------------------------------------------------------

    def stop(self, grace_seconds: float | None = None) -> None:
        """Terminate every container (SIGTERM, then SIGKILL after the grace period), remove
        the pod's namespace, cgroups and files."""
        self.deleting = True
        self._stop.set()
        self.environment.pod_changed(self)
        grace = self.template.termination_grace_seconds if grace_seconds is None else grace_seconds
        stoppers = [
            threading.Thread(target=self._terminate, args=(name, grace), daemon=True)
            for name in list(self._processes)
        ]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for thread in self._threads:
            thread.join(timeout=5)
        for cgroup in self.cgroups.values():
            with contextlib.suppress(OSError, LocalRunError):
                cgroup.remove()
        if self.endpoint is not None:
            self.environment.network.remove(self.endpoint)
        self._unmount_memory_volumes()

    def _terminate(self, container: str, grace_seconds: float) -> None:
        with self._lock:
            process = self._processes.get(container)
        if process is None:
            return
        state = self.containers.get(container) or self.init_containers.get(container)
        pid = state.pid if state else None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            if container in self.cgroups:
                self.cgroups[container].kill_all(signal.SIGKILL)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    # -- what a container is made of -----------------------------------------------------------

    def _cgroup(self, container: Container) -> ContainerCgroup:
        with self._lock:
            if container.name not in self.cgroups:
                self.cgroups[container.name] = self.environment.cgroups.create(
                    self.environment.run_id, self.name, container.name, container.resources
                )
            return self.cgroups[container.name]

    def _write_pod_files(self) -> None:
        etc = self.directory / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        self.refresh_hosts_file()
        (etc / "hostname").write_text(f"{self.name}\n")
        # Names the hosts file does not know fail at once: nothing listens on port 53 inside.
        (etc / "resolv.conf").write_text(
            f"nameserver 127.0.0.1\nsearch {self.namespace}.svc.cluster.local svc.cluster.local "
            "cluster.local\noptions ndots:5 attempts:1 timeout:1\n"
        )

    def refresh_hosts_file(self) -> None:
        """Rewrite /etc/hosts in place (the same inode: it is bind-mounted into the containers),
        as cluster DNS would answer for Services created after the pod."""
        if self.endpoint is None:
            return
        path = self.directory / "etc" / "hosts"
        text = self.environment.hosts_file(self.namespace, self.name, self.endpoint.address)
        with path.open("a+") as stream:
            stream.seek(0)
            if stream.read() == text:
                return
            stream.seek(0)
            stream.truncate()
            stream.write(text)

    def _volume_directory(self, volume: Volume) -> Path:
        return self.directory / "volumes" / volume.name

    def _prepare_volumes(self) -> None:
        fs_group = next(
            (
                c.security.fs_group
                for c in self.template.containers
                if c.security.fs_group is not None
            ),
            None,
        )
        for volume in self.template.volumes:
            directory = self._volume_directory(volume)
            if volume.kind == "persistentVolumeClaim":
                claim = self.environment.claim_directory(
                    self.namespace, volume.source, self.reference
                )
                directory.parent.mkdir(parents=True, exist_ok=True)
                if not directory.is_symlink():
                    directory.symlink_to(claim)
                _own(claim, fs_group, writable=True)
                continue
            directory.mkdir(parents=True, exist_ok=True)
            if volume.kind == "emptyDir":
                # Kubernetes makes emptyDir world-writable; fsGroup owns it too.
                directory.chmod(0o777)
                _own(directory, fs_group, writable=True)
                continue
            kind = "ConfigMap" if volume.kind == "configMap" else "Secret"
            data = self.environment.config_data(kind, self.namespace, volume.source)
            if data is None:
                if volume.optional:
                    continue
                raise ContainerConfigError(f'{kind.lower()} "{volume.source}" not found')
            items = volume.items or tuple(KeyToPath(key, key) for key in sorted(data))
            for item in items:
                if item.key not in data:
                    raise ContainerConfigError(
                        f'{kind.lower()} "{volume.source}" has no key "{item.key}"'
                    )
                target = directory / item.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(data[item.key])
                target.chmod(item.mode if item.mode is not None else volume.default_mode)
            _own(directory, fs_group, writable=False)

    def _unmount_memory_volumes(self) -> None:
        # Memory-backed emptyDirs are mounted inside the containers' namespaces only.
        return

    def _launch_spec(self, container: Container) -> launcher.Spec:
        field = f"spec.containers[{container.name}]"
        image = self.environment.image(container.image, self.owner, f"{field}.image")
        recipe = image.recipe
        security = container.security
        uid, gid = _user_of(image, security, self.owner, field)
        groups = sorted(
            {
                gid,
                *security.supplemental_groups,
                *([security.fs_group] if security.fs_group is not None else []),
            }
        )
        env = self._environment_of(container, image)
        argv = [
            workloads.expand(part, env.get)
            for part in workloads.effective_command(container, recipe.entrypoint, recipe.cmd)
        ]
        if not argv:
            raise UnsupportedManifest(
                self.owner,
                field,
                "no command: the image has no ENTRYPOINT or CMD and the manifest none",
            )
        working_dir = container.working_dir or recipe.workdir or "/"
        binds = self._binds(container, image)
        tmpfs = [("/dev/shm", 64 * 2**20)]
        for mount in container.mounts:
            volume = next(v for v in self.template.volumes if v.name == mount.volume)
            if volume.kind == "emptyDir" and volume.memory_medium:
                tmpfs.append((mount.path, volume.size_limit_bytes or 64 * 2**20))
        container_root = self.directory / "roots" / container.name
        container_root.mkdir(parents=True, exist_ok=True)
        symlinks = [
            (f"/{name}", str(Path(f"/{name}").readlink()))
            for name in _HOST_DIRECTORIES
            if Path(f"/{name}").is_symlink()
        ]
        return launcher.Spec(
            argv=argv,
            env=env,
            working_dir=working_dir,
            uid=uid,
            gid=gid,
            groups=groups,
            hostname=self.name,
            network_namespace=self.endpoint.namespace_path if self.endpoint else "",
            root=str(container_root),
            binds=binds,
            tmpfs=tmpfs,
            symlinks=symlinks,
            overlays=[("/etc", "/etc")],
            read_only_root=security.read_only_root_filesystem,
            no_new_privileges=not security.allow_privilege_escalation or uid != 0,
            pid_file=str(self.directory / f"{container.name}.pid"),
        )

    def _environment_of(self, container: Container, image: RunnableImage) -> dict[str, str]:
        env: dict[str, str] = dict(image.environment)
        env["HOSTNAME"] = self.name
        if self.template.enable_service_links:
            env.update(self.environment.service_links(self.namespace))
        for source in container.env_from:
            data = self.environment.config_data(source.kind, self.namespace, source.name)
            if data is None:
                if source.optional:
                    continue
                raise ContainerConfigError(f'{source.kind.lower()} "{source.name}" not found')
            for key, value in data.items():
                env[source.prefix + key] = value
        defined: dict[str, str] = {}
        for variable in container.env:
            if variable.reference is None:
                value = workloads.expand(
                    variable.value or "",
                    lambda name: defined.get(name, env.get(name) if name in env else None),
                )
            elif isinstance(variable.reference, KeyReference):
                reference = variable.reference
                data = self.environment.config_data(reference.kind, self.namespace, reference.name)
                if data is None or reference.key not in data:
                    if reference.optional:
                        continue
                    what = f'{reference.kind.lower()} "{reference.name}"'
                    raise ContainerConfigError(
                        f"{what} not found"
                        if data is None
                        else f"couldn't find key {reference.key} in {what}"
                    )
                value = data[reference.key]
            else:
                value = self._field_value(variable.reference)
            defined[variable.name] = value
            env[variable.name] = value
        return env

    def _field_value(self, reference: FieldReference) -> str:
        path = reference.field_path
        values = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": f"{self.environment.run_id}-{self.name}",
            "spec.nodeName": "local-run",
            "spec.serviceAccountName": self.template.service_account,
            "status.podIP": self.ip,
            "status.podIPs": self.ip,
            "status.hostIP": self.environment.network.node_address,
            "status.hostIPs": self.environment.network.node_address,
        }
        if path in values:
            return values[path]
        key = path.split("['", 1)[1].rstrip("']")
        source = dict(
            self.template.labels
            if path.startswith("metadata.labels")
            else self.template.annotations
        )
        return source.get(key, "")

    def _binds(self, container: Container, image: RunnableImage) -> list[launcher.Bind]:
        binds: list[launcher.Bind] = []
        for name in _HOST_DIRECTORIES:
            path = Path("/") / name
            if path.is_dir() and not path.is_symlink():
                binds.append(launcher.Bind(str(path), f"/{name}"))
        etc = self.directory / "etc"
        for name in ("hosts", "hostname", "resolv.conf"):
            binds.append(launcher.Bind(str(etc / name), f"/etc/{name}", is_file=True))
        for name, lines in (("passwd", image.passwd_lines), ("group", image.group_lines)):
            merged = self.directory / "etc" / f"{container.name}.{name}"
            merged.write_text(
                Path(f"/etc/{name}").read_text() + "".join(f"{line}\n" for line in lines)
            )
            binds.append(launcher.Bind(str(merged), f"/etc/{name}", is_file=True))
        if self.environment.ca_bundle is not None and Path(_CA_BUNDLE).exists():
            binds.append(launcher.Bind(str(self.environment.ca_bundle), _CA_BUNDLE, is_file=True))
        binds.append(launcher.Bind("/sys", "/sys"))
        for device in _DEVICES:
            binds.append(
                launcher.Bind(f"/dev/{device}", f"/dev/{device}", read_only=False, is_file=True)
            )
        # The interpreter and the virtualenv keep their host paths (scripts name them), mounted
        # last: a volume over a directory above them (an emptyDir on /tmp, with the image cache
        # under /tmp) must not hide them.
        software = [
            directory
            for needed in (image.python_prefix, image.venv)
            if (directory := str(needed) if needed is not None else "")
            and not any(
                directory == b.target or directory.startswith(b.target + "/") for b in binds
            )
        ]
        if image.rootfs.is_dir():
            for entry in sorted(image.rootfs.iterdir()):
                binds.append(launcher.Bind(str(entry), f"/{entry.name}", is_file=entry.is_file()))
        for mount in sorted(container.mounts, key=lambda m: m.path.count("/")):
            volume = next(v for v in self.template.volumes if v.name == mount.volume)
            if volume.kind == "emptyDir" and volume.memory_medium:
                continue
            source = self._volume_directory(volume)
            if volume.kind == "persistentVolumeClaim":
                source = source.resolve()
            if mount.sub_path:
                source = source / mount.sub_path
                if not source.exists():
                    source.mkdir(parents=True)
            read_only = (
                mount.read_only or volume.kind in ("configMap", "secret") or volume.read_only
            )
            binds.append(
                launcher.Bind(
                    str(source), mount.path, read_only=read_only, is_file=source.is_file()
                )
            )
        binds.extend(launcher.Bind(directory, directory) for directory in software)
        return binds


def _own(path: Path, group: int | None, writable: bool) -> None:
    if group is None:
        return
    for directory, _subdirectories, files in os.walk(path):
        os.chown(directory, -1, group)
        Path(directory).chmod(0o2775 if writable else 0o2755)
        for name in files:
            file = Path(directory, name)
            os.chown(file, -1, group)


def _user_of(
    image: RunnableImage, security: SecurityContext, resource: ObjectReference, field: str
) -> tuple[int, int]:
    uid = security.run_as_user
    gid = security.run_as_group
    image_user = image.recipe.user
    passwd = {line.split(":")[0]: line.split(":") for line in image.passwd_lines}
    if uid is None and image_user:
        name = image_user.split(":")[0]
        if name.isdigit():
            uid = int(name)
        elif name in passwd:
            uid = int(passwd[name][2])
        elif security.run_as_non_root:
            raise ContainerConfigError(
                f"container has runAsNonRoot and image has non-numeric user ({name}), "
                "cannot verify user is non-root"
            )
    if uid is None:
        uid = 0
    if uid == 0 and security.run_as_non_root:
        raise ContainerConfigError("container has runAsNonRoot and image will run as root")
    if gid is None:
        entry = next((fields for fields in passwd.values() if fields[2] == str(uid)), None)
        gid = int(entry[3]) if entry else 0
    return uid, gid


def _note_ready(state: ContainerState) -> None:
    if state.start_up_seconds is None and state.started_at is not None and state.ready:
        state.start_up_seconds = time.time() - state.started_at


def _wait_for_pid(path: Path, process: subprocess.Popen[bytes]) -> int | None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text())
        if process.poll() is not None:
            return None
        time.sleep(0.01)
    return None


def _http_probe(address: str, action: HttpGet, timeout: float) -> tuple[bool, str]:
    headers = {"Host": f"{address}:{action.port}", "User-Agent": "kube-probe/1.35", "Accept": "*/*"}
    headers.update(dict(action.headers))
    if action.scheme == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            address, action.port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(address, action.port, timeout=timeout)
    try:
        connection.request("GET", action.path, headers=headers)
        response = connection.getresponse()
        body = response.read(200)
    finally:
        connection.close()
    if 200 <= response.status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {response.status} {body[:120]!r}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "no limit"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}".replace(".0 ", " ")
    return f"{value} B"


def decode_secret(data: dict[str, str]) -> dict[str, str]:
    """A Secret's `data` values are base64; what a container sees is the decoded text."""
    return {key: base64.b64decode(value).decode("utf-8", "replace") for key, value in data.items()}


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

"""Container resources as cgroups: each container of the local run gets a cgroup of its own, so
its `resources` hold as they hold under the kubelet.

What each field becomes:

- memory limit: a hard limit (v1 `memory.limit_in_bytes`, and `memory.memsw.limit_in_bytes` at
  the same value so swap cannot hide an overrun; v2 `memory.max`, with `memory.swap.max` 0).
  Going past it gets the container OOM-killed, as on a node.
- CPU limit: a CFS quota of `limit * 100 ms` per 100 ms period (v1 `cpu.cfs_quota_us`, v2
  `cpu.max`); no limit, no quota.
- CPU request: `cpu.shares` (v1) or `cpu.weight` (v2, converted from shares as the kubelet
  does), on the container and, as the sum of its containers' requests, on its pod, so requests
  divide a busy CPU between pods as they do on a node. (A limit without a request counts as the
  request, as the API server defaults it.) `mlopsctl` itself weighs as the machine's CPUs, as
  the kubelet's `kubepods` weighs as the node's allocatable CPU.
- memory request: nothing enforces it on a node either (the scheduler reads it); it is kept in
  `ContainerCgroup.resources`.

Layout: `mlopsctl/<run id>/<pod>/<container>` in each hierarchy the limits need (v1: memory, cpu,
cpuacct; v2: the unified one). On v1 the tree hangs below the caller's own cgroup in each
hierarchy, so whatever accounts for and limits the caller (a systemd session, a CI job, a
sandbox) keeps doing so for everything the run starts; a run never moves processes out from
under it. On v2 the tree hangs below the root, as container runtimes put theirs: v2 allows
controllers only below cgroups that hold no processes, and the caller's own cgroup holds the
caller.

Which runs are whose: the primary hierarchy (v1 memory, below the caller's own cgroup; v2 the
only one) says. Where the caller's cpu cgroup is the root, as in many sandboxes and CI runners,
runs of different sessions share `cpu/mlopsctl`, so run ids must be unique on the machine;
removal only ever kills processes found in the primary hierarchy, and leaves another session's
alone.

The launcher puts a new process into its container's cgroups itself, before it execs the
workload, by writing to each of `ContainerCgroup.procs_files()`; nothing of the workload ever
runs outside its limits. (Pages a process touched before it moved stay charged to its old
cgroup; before exec that is next to nothing.)

OOM kills differ between the versions, and the caller evens them out. On v2 the kubelet sets
`memory.oom.group`, so when one process of a container is OOM-killed the kernel kills all of
them; this module sets it too. v1 has no such switch: the kernel kills one process (perhaps a
worker, leaving its parent serving with one worker fewer), which a node on v2 never does. So the
caller, whenever a process of the container ends, does::

    if cgroup.oom_killed_since(oom_kills_when_started):
        cgroup.kill_all(signal.SIGKILL)  # the rest, as memory.oom.group would
        # ... and reports the container as OOMKilled, exit code 137

which changes nothing on v2, where the rest is already gone.

cgroup v2 is written from the kernel's documentation (Documentation/admin-guide/cgroup-v2.rst)
and has not run on the machines this was written on, which have v1; the tests exercise v1.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mlopsctl.base.errors import LocalRunError
from mlopsctl.localrun.model import Resources

# The kubelet's CFS period and the smallest quota it writes (the kernel refuses less than 1 ms).
CFS_PERIOD_MICROSECONDS = 100_000
MIN_CFS_QUOTA_MICROSECONDS = 1_000
# cpu.shares bounds as the kubelet clamps them; 2 is what a container without a request gets.
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262_144
ROOT_NAME = "mlopsctl"
DEFAULT_REMOVE_TIMEOUT_SECONDS = 10.0

_V1_CONTROLLERS = ("memory", "cpu", "cpuacct")
_V2_CONTROLLERS = ("cpu", "memory")
# Bounds the kill passes against a container that forks as fast as it is killed.
_MAX_SIGNAL_PASSES = 100
_POLL_SECONDS = 0.02
# Files of a v1 hierarchy whose names have no dot (every other control file has one, and an
# escaped name never does), so a cgroup named like them could not be made.
_DOTLESS_CONTROL_FILES = frozenset({"tasks"})
_NAME_MAX = 255


@dataclass(frozen=True)
class Throttling:
    """CFS bandwidth control of one container: periods that ran, and those the quota cut short."""

    periods: int
    throttled_periods: int
    throttled_seconds: float


# --- Pure parts: conversions, names, the kernel's file formats -------------------------------


def effective_cpu_request_millis(resources: Resources) -> int | None:
    """The CPU request, or the limit when only a limit is given, as the API server defaults it."""
    if resources.cpu_request_millis is not None:
        return resources.cpu_request_millis
    return resources.cpu_limit_millis


def cpu_shares(request_millis: int | None) -> int:
    """cpu.shares for a CPU request, as the kubelet computes it (`MilliCPUToShares`)."""
    if not request_millis:
        return MIN_CPU_SHARES
    shares = request_millis * 1024 // 1000
    return max(MIN_CPU_SHARES, min(MAX_CPU_SHARES, shares))


def cpu_weight(shares: int) -> int:
    """cgroup v2 cpu.weight for cpu.shares, as the kubelet converts them (KEP 2254)."""
    return ((shares - 2) * 9999) // 262142 + 1


def cpu_quota_microseconds(limit_millis: int | None) -> int | None:
    """The CFS quota per `CFS_PERIOD_MICROSECONDS` for a CPU limit; None means no quota."""
    if not limit_millis:
        return None
    quota = limit_millis * CFS_PERIOD_MICROSECONDS // 1000
    return max(MIN_CFS_QUOTA_MICROSECONDS, quota)


def cgroup_name(name: str) -> str:
    """A directory name for a run id, pod or container, reversible by `name_from_cgroup`.

    Letters, digits and '-' stay; every other byte becomes `_xx` (hex), so '/' cannot make a
    path, '.' and '..' cannot escape, and no name collides with a control file (those have dots).
    """
    if not name:
        raise LocalRunError("cgroups: an empty name cannot name a cgroup")
    escaped = "".join(
        chr(byte)
        if chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) == "-")
        # Non-ASCII characters are escaped byte by byte, hence the loop over UTF-8.
        else f"_{byte:02x}"
        for byte in name.encode()
    )
    if escaped in _DOTLESS_CONTROL_FILES:
        escaped = f"_{ord(escaped[0]):02x}{escaped[1:]}"
    if len(escaped) > _NAME_MAX:
        raise LocalRunError(
            f"cgroups: {name[:40]!r}... is too long for a cgroup name "
            f"({len(escaped)} bytes escaped, at most {_NAME_MAX})"
        )
    return escaped


def name_from_cgroup(directory_name: str) -> str:
    """The name `cgroup_name` escaped into `directory_name`."""
    raw = bytearray()
    index = 0
    try:
        while index < len(directory_name):
            character = directory_name[index]
            if character == "_":
                raw += bytes.fromhex(directory_name[index + 1 : index + 3])
                index += 3
            else:
                raw += character.encode()
                index += 1
        return raw.decode()
    except ValueError as error:  # UnicodeDecodeError is one too
        raise LocalRunError(
            f"cgroups: {directory_name!r} is not a name this module made (no run id escapes to it)"
        ) from error


def parse_flat_keyed(text: str) -> dict[str, int]:
    """`key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            values[parts[0]] = int(parts[1])
    return values


@dataclass(frozen=True)
class Mount:
    path: Path
    filesystem: str
    options: frozenset[str]


def parse_mounts(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of /proc/self/mounts."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] not in ("cgroup", "cgroup2"):
            continue
        # The kernel writes a space in a mount point as \040 (and tab, newline, backslash alike).
        path = fields[1].encode().decode("unicode_escape")
        mounts.append(Mount(Path(path), fields[2], frozenset(fields[3].split(","))))
    return mounts


def parse_own_cgroups(text: str) -> dict[str, str]:
    """/proc/self/cgroup: each v1 controller's cgroup path, and the v2 one under key ""."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


# --- Files of the cgroup filesystems ----------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise LocalRunError(f"cgroups: cannot read {path}: {error.strerror}") from error


def _read_int(path: Path) -> int:
    text = _read(path).strip()
    try:
        return int(text)
    except ValueError as error:
        raise LocalRunError(f"cgroups: {path} holds {text!r}, not a number") from error


def _write(path: Path, value: str) -> None:
    # One write(2), unbuffered, so the kernel's answer (EINVAL, EBUSY) is the error raised.
    try:
        descriptor = os.open(path, os.O_WRONLY)
        try:
            os.write(descriptor, value.encode())
        finally:
            os.close(descriptor)
    except OSError as error:
        raise LocalRunError(
            f"cgroups: cannot write {value!r} to {path}: {error.strerror}"
        ) from error


def _pids_in(directories: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for directory in directories:
        try:
            text = (directory / "cgroup.procs").read_text()
        except FileNotFoundError:
            continue
        except OSError as error:
            raise LocalRunError(
                f"cgroups: cannot read {directory / 'cgroup.procs'}: {error.strerror}"
            ) from error
        pids.update(int(line) for line in text.split())
    return pids


def _signal_pass(directories: Sequence[Path], pids: Iterable[int], signal_number: int) -> None:
    """Signal those of `pids` still in `directories`, never a stranger that reused a pid.

    A pidfd pins the process it was opened for; a pid still listed after the pidfds are open
    belongs to the process the pidfd holds.
    """
    handles: dict[int, int] = {}
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                handles[pid] = os.pidfd_open(pid)
        still_inside = _pids_in(directories)
        for pid, handle in handles.items():
            if pid in still_inside:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(handle, signal_number)
    finally:
        for handle in handles.values():
            os.close(handle)


def _signal_all(directories: Sequence[Path], signal_number: int) -> None:
    """Signal every process in `directories` once, including children forked meanwhile."""
    signalled: set[int] = set()
    for _ in range(_MAX_SIGNAL_PASSES):
        new = _pids_in(directories) - signalled
        if not new:
            return
        _signal_pass(directories, new, signal_number)
        signalled |= new
    raise LocalRunError(
        f"cgroups: processes in {directories[0]} kept appearing through "
        f"{_MAX_SIGNAL_PASSES} passes of signal {signal_number}"
    )


def _kill_until_empty(directories: Sequence[Path], deadline: float) -> None:
    while True:
        pids = _pids_in(directories)
        if not pids:
            return
        if time.monotonic() > deadline:
            raise LocalRunError(
                f"cgroups: {directories[0]} still holds processes after SIGKILL: "
                + ", ".join(f"{pid} ({_process_state(pid)})" for pid in sorted(pids))
            )
        _signal_pass(directories, pids, signal.SIGKILL)
        time.sleep(_POLL_SECONDS)


def _process_state(pid: int) -> str:
    try:
        # The state follows the command name, which is in parentheses and may hold spaces.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
    return {"D": "uninterruptible sleep", "Z": "zombie"}.get(state, f"state {state}")


def _remove_cgroups(directories: Sequence[Path], owners: Sequence[Path], deadline: float) -> None:
    """Kill every process in `owners`, then remove `directories` (children first).

    Only the primary hierarchy's directories are `owners`: on v1 the other hierarchies may hold
    the processes of another session's run, and a process that joined since the kill (one a
    launcher had already forked) joins the primary hierarchy first, so the next pass gets it.
    """
    while True:
        _kill_until_empty(owners, deadline)
        busy = _rmdir_all(directories)
        if busy is None:
            return
        if time.monotonic() > deadline:
            remaining = sorted(_pids_in([busy]))
            reason = (
                f"processes {remaining} are in it but not in {owners[0]}: another run with "
                "the same id, in another session?"
                if remaining
                else "a process in it has exited but not been reaped by its parent"
            )
            raise LocalRunError(f"cgroups: cannot remove {busy}: still busy ({reason})")
        time.sleep(_POLL_SECONDS)


def _rmdir_all(directories: Iterable[Path]) -> Path | None:
    """rmdir each directory; the first one the kernel still finds busy, or None."""
    for directory in directories:
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError as error:
            if error.errno == errno.EBUSY:
                return directory
            raise LocalRunError(f"cgroups: cannot remove {directory}: {error.strerror}") from error
    return None


def _remove_if_empty(directory: Path) -> bool:
    """rmdir a parent cgroup unless something still lives in it; True if it is gone."""
    try:
        directory.rmdir()
    except FileNotFoundError:
        return True
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EBUSY, errno.EEXIST):
            return False
        raise LocalRunError(f"cgroups: cannot remove {directory}: {error.strerror}") from error
    return True


def _subdirectories(directory: Path) -> list[Path]:
    try:
        return sorted(entry for entry in directory.iterdir() if entry.is_dir())
    except FileNotFoundError:
        return []
    except OSError as error:
        raise LocalRunError(f"cgroups: cannot list {directory}: {error.strerror}") from error


def _tree_bottom_up(root: Path) -> list[Path]:
    children = [path for child in _subdirectories(root) for path in _tree_bottom_up(child)]
    return [*children, root] if root.is_dir() else children


# --- The interface ----------------------------------------------------------------------------


class ContainerCgroup(ABC):
    """The cgroups of one container: where its processes go, what they used, and their end."""

    def __init__(
        self,
        driver: CgroupDriver,
        run_id: str,
        pod: str,
        container: str,
        resources: Resources,
        directories: Mapping[str, Path],
    ) -> None:
        self.run_id = run_id
        self.pod = pod
        self.container = container
        self.resources = resources
        # Controller -> the container's directory in that controller's hierarchy.
        self.directories = dict(directories)
        self._driver = driver

    @property
    def leaves(self) -> list[Path]:
        """The container's distinct directories (co-mounted controllers share one), the primary
        hierarchy's first."""
        return list(dict.fromkeys(self.directories.values()))

    @property
    def primary_leaf(self) -> Path:
        """The directory whose processes are the container's (see `CgroupDriver.primary`)."""
        return self.directories[self._driver.primary]

    def procs_files(self) -> list[Path]:
        """The files a new process writes "0" (itself) or its pid to, before it execs."""
        return [leaf / "cgroup.procs" for leaf in self.leaves]

    @abstractmethod
    def memory_bytes(self) -> int:
        """The working set, as the kubelet reports it: usage less inactive file cache."""

    @abstractmethod
    def peak_memory_bytes(self) -> int:
        """The highest memory usage (cache included) since the cgroup was made."""

    @abstractmethod
    def oom_kills(self) -> int:
        """How many processes of the container the OOM killer has killed."""

    @abstractmethod
    def cpu_seconds(self) -> float:
        """CPU time the container's processes used, user and system."""

    @abstractmethod
    def throttling(self) -> Throttling:
        """How often the CPU limit held the container back."""

    def oom_killed_since(self, previous_count: int) -> bool:
        """Whether a process was OOM-killed since `oom_kills()` returned `previous_count`.

        On v1 the rest of the container may still run: the caller kills it with
        `kill_all(signal.SIGKILL)`, as v2's memory.oom.group does (see the module docstring).
        """
        return self.oom_kills() > previous_count

    def pids(self) -> list[int]:
        """The processes in the container, as pids of the caller's PID namespace."""
        return sorted(_pids_in([self.primary_leaf]))

    def kill_all(self, signal_number: int) -> None:
        """Send `signal_number` to every process in the container, children forked meanwhile too.

        Does not wait for them to end; `remove()` does.
        """
        if signal_number == signal.SIGKILL:
            self._driver._kill_at_once(self.primary_leaf)
        _signal_all([self.primary_leaf], signal_number)

    def remove(self, timeout: float = DEFAULT_REMOVE_TIMEOUT_SECONDS) -> None:
        """Kill what is left, wait until it is gone, and remove the cgroups and empty parents.

        Waits up to `timeout` for the kernel to let go of the directories (on some kernels a
        killed process holds them until its parent reaps it). Removing twice is harmless.
        """
        deadline = time.monotonic() + timeout
        self.kill_all(signal.SIGKILL)
        # The primary hierarchy's directory goes last: it is how a run is found again.
        _remove_cgroups(list(reversed(self.leaves)), [self.primary_leaf], deadline)
        self._driver._container_removed(self)


class CgroupDriver(ABC):
    """Makes and removes the cgroups of runs, in one cgroup version's filesystem."""

    version: ClassVar[int]
    # The hierarchy whose directories say which runs exist: it is made first and removed last,
    # so a run interrupted halfway through either is still found. On v1 it is memory, the one
    # below the caller's own cgroup, so the runs of another session (with its own cgroup but
    # the same root cpu hierarchy) are not taken for leftovers.
    primary: ClassVar[str]
    container_cgroup_class: ClassVar[type[ContainerCgroup]]

    def __init__(self, bases: Mapping[str, Path]) -> None:
        # Controller -> the `mlopsctl` directory in that controller's hierarchy, primary first.
        self.bases = {self.primary: bases[self.primary], **bases}
        # (run, pod) -> container -> effective CPU request, for the pod's shares or weight.
        self._pod_requests: dict[tuple[str, str], dict[str, int]] = {}

    @property
    def base_directories(self) -> list[Path]:
        """The distinct `mlopsctl` directories, the primary hierarchy's first."""
        return list(dict.fromkeys(self.bases.values()))

    def create(
        self, run_id: str, pod: str, container: str, resources: Resources
    ) -> ContainerCgroup:
        """Make `mlopsctl/<run_id>/<pod>/<container>` with `resources` as limits.

        A leftover empty cgroup of the same name (a restarted container, a crashed run) is made
        anew so its counters start at zero; one that still holds processes is refused.
        """
        parts = (cgroup_name(run_id), cgroup_name(pod), cgroup_name(container))
        directories = {controller: base.joinpath(*parts) for controller, base in self.bases.items()}
        cgroup = self.container_cgroup_class(self, run_id, pod, container, resources, directories)
        leaves = cgroup.leaves
        for leaf in leaves:
            running = _pids_in([leaf])
            if running:
                raise LocalRunError(
                    f"cgroups: container {container!r} of pod {pod!r} in run {run_id!r} still has "
                    f"processes {sorted(running)} in {leaf}"
                )
        deadline = time.monotonic() + DEFAULT_REMOVE_TIMEOUT_SECONDS
        _remove_cgroups(list(reversed(leaves)), [cgroup.primary_leaf], deadline)
        try:
            for leaf in leaves:
                self._make(leaf)
            self._set_base_cpu(cpu_shares(len(os.sched_getaffinity(0)) * 1000))
            self._configure(cgroup)
            request = effective_cpu_request_millis(resources) or 0
            self._pod_requests.setdefault(parts[:2], {})[parts[2]] = request
            self._update_pod(parts[0], parts[1])
        except BaseException:
            # The error that stopped the creation is the one to report, not a cleanup's.
            with contextlib.suppress(LocalRunError):
                cgroup.remove()
            raise
        return cgroup

    def leftover_runs(self) -> list[str]:
        """Run ids that have cgroups here: one killed before it cleaned up, or one still going.

        Nothing here tells the two apart: the caller removes only runs it knows have ended (its
        own run id from an earlier start, say). Only runs below the same base are seen: on v1,
        below the caller's own memory cgroup.
        """
        primary = self.bases[self.primary]
        return sorted(name_from_cgroup(path.name) for path in _subdirectories(primary))

    def remove_run(self, run_id: str, timeout: float = DEFAULT_REMOVE_TIMEOUT_SECONDS) -> None:
        """Kill every process of a run and remove all its cgroups, whoever made them."""
        deadline = time.monotonic() + timeout
        name = cgroup_name(run_id)
        primary_root = self.bases[self.primary] / name
        self._kill_at_once(primary_root)
        # Children before parents, the primary hierarchy's last.
        roots = [base / name for base in reversed(self.base_directories)]
        trees = [path for root in roots for path in _tree_bottom_up(root)]
        _remove_cgroups(trees, _tree_bottom_up(primary_root), deadline)
        for base in reversed(self.base_directories):
            _remove_if_empty(base)
        for key in [key for key in self._pod_requests if key[0] == name]:
            del self._pod_requests[key]

    def _make(self, leaf: Path) -> None:
        # A concurrent run that removes the emptied `mlopsctl` directory between two mkdirs
        # makes the next one fail with ENOENT; making the chain again is enough.
        for attempt in range(3):
            try:
                for directory in self._chain(leaf):
                    if not directory.is_dir():
                        with contextlib.suppress(FileExistsError):
                            directory.mkdir()
                    if directory != leaf:
                        self._prepare_parent(directory)
                return
            except FileNotFoundError as error:
                if attempt == 2:
                    raise LocalRunError(f"cgroups: cannot make {leaf}: {error.strerror}") from error
            except OSError as error:
                raise LocalRunError(f"cgroups: cannot make {leaf}: {error.strerror}") from error

    def _chain(self, leaf: Path) -> list[Path]:
        """The directories from a base to `leaf`, base first."""
        base = next(base for base in self.base_directories if leaf.is_relative_to(base))
        chain = [base]
        for part in leaf.relative_to(base).parts:
            chain.append(chain[-1] / part)
        return chain

    def _container_removed(self, cgroup: ContainerCgroup) -> None:
        run, pod = cgroup_name(cgroup.run_id), cgroup_name(cgroup.pod)
        requests = self._pod_requests.get((run, pod), {})
        requests.pop(cgroup_name(cgroup.container), None)
        pods_gone = True
        for base in reversed(self.base_directories):
            pod_gone = _remove_if_empty(base / run / pod)
            pods_gone = pods_gone and pod_gone
            if pod_gone and _remove_if_empty(base / run):
                _remove_if_empty(base)
        if pods_gone:
            self._pod_requests.pop((run, pod), None)
        else:
            self._update_pod(run, pod)

    def _update_pod(self, run: str, pod: str) -> None:
        total = sum(self._pod_requests.get((run, pod), {}).values())
        self._set_pod_cpu(run, pod, cpu_shares(total))

    @abstractmethod
    def _prepare_parent(self, directory: Path) -> None:
        """Make a cgroup that will hold cgroups (not processes) able to pass controllers down."""

    @abstractmethod
    def _configure(self, cgroup: ContainerCgroup) -> None:
        """Write the container's limits."""

    @abstractmethod
    def _set_pod_cpu(self, run: str, pod: str, shares: int) -> None:
        """Give a pod's cgroup the CPU share of its containers' requests together."""

    @abstractmethod
    def _set_base_cpu(self, shares: int) -> None:
        """Give `mlopsctl` the CPU share of the machine's CPUs, as the kubelet gives kubepods
        the node's allocatable CPU: otherwise all the runs' containers together would weigh as
        much as one process outside them."""

    @abstractmethod
    def _kill_at_once(self, directory: Path) -> None:
        """SIGKILL everything in `directory` and below at once, where the version can."""


# --- cgroup v1 --------------------------------------------------------------------------------


class V1ContainerCgroup(ContainerCgroup):
    @property
    def _memory(self) -> Path:
        return self.directories["memory"]

    def memory_bytes(self) -> int:
        usage = _read_int(self._memory / "memory.usage_in_bytes")
        stat = parse_flat_keyed(_read(self._memory / "memory.stat"))
        return max(0, usage - stat.get("total_inactive_file", stat.get("inactive_file", 0)))

    def peak_memory_bytes(self) -> int:
        return _read_int(self._memory / "memory.max_usage_in_bytes")

    def oom_kills(self) -> int:
        path = self._memory / "memory.oom_control"
        control = parse_flat_keyed(_read(path))
        if "oom_kill" not in control:
            raise LocalRunError(
                f"cgroups: {path} has no oom_kill line (Linux 4.13 or later has it): "
                "OOM kills of containers cannot be told apart from other SIGKILLs"
            )
        return control["oom_kill"]

    def cpu_seconds(self) -> float:
        return _read_int(self.directories["cpuacct"] / "cpuacct.usage") / 1e9

    def throttling(self) -> Throttling:
        stat = parse_flat_keyed(_read(self.directories["cpu"] / "cpu.stat"))
        return Throttling(
            periods=stat.get("nr_periods", 0),
            throttled_periods=stat.get("nr_throttled", 0),
            throttled_seconds=stat.get("throttled_time", 0) / 1e9,
        )


class V1Driver(CgroupDriver):
    version = 1
    primary = "memory"

    container_cgroup_class: ClassVar[type[ContainerCgroup]] = V1ContainerCgroup

    def _prepare_parent(self, directory: Path) -> None:
        # v1 hierarchies pass every controller down by themselves.
        pass

    def _configure(self, cgroup: ContainerCgroup) -> None:
        resources = cgroup.resources
        memory = cgroup.directories["memory"]
        if resources.memory_limit_bytes is not None:
            # memsw must stay >= the memory limit, so the memory limit goes first.
            _write(memory / "memory.limit_in_bytes", str(resources.memory_limit_bytes))
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", str(resources.memory_limit_bytes))
        cpu = cgroup.directories["cpu"]
        quota = cpu_quota_microseconds(resources.cpu_limit_millis)
        _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_MICROSECONDS))
        _write(cpu / "cpu.cfs_quota_us", str(-1 if quota is None else quota))
        _write(cpu / "cpu.shares", str(cpu_shares(effective_cpu_request_millis(resources))))

    def _set_pod_cpu(self, run: str, pod: str, shares: int) -> None:
        pod_directory = self.bases["cpu"] / run / pod
        if pod_directory.is_dir():
            _write(pod_directory / "cpu.shares", str(shares))

    def _set_base_cpu(self, shares: int) -> None:
        _write(self.bases["cpu"] / "cpu.shares", str(shares))

    def _kill_at_once(self, directory: Path) -> None:
        # v1 has nothing like cgroup.kill: the passes of SIGKILL that follow do it all.
        pass


# --- cgroup v2 (untested on the machines this was written on) ---------------------------------


class V2ContainerCgroup(ContainerCgroup):
    def __init__(
        self,
        driver: CgroupDriver,
        run_id: str,
        pod: str,
        container: str,
        resources: Resources,
        directories: Mapping[str, Path],
    ) -> None:
        super().__init__(driver, run_id, pod, container, resources, directories)
        # Before Linux 5.19 there is no memory.peak: the highest memory.current seen stands in.
        self._highest_seen = 0

    @property
    def _directory(self) -> Path:
        return self.directories["unified"]

    def _current(self) -> int:
        current = _read_int(self._directory / "memory.current")
        self._highest_seen = max(self._highest_seen, current)
        return current

    def memory_bytes(self) -> int:
        current = self._current()
        stat = parse_flat_keyed(_read(self._directory / "memory.stat"))
        return max(0, current - stat.get("inactive_file", 0))

    def peak_memory_bytes(self) -> int:
        peak = self._directory / "memory.peak"
        if peak.exists():
            return _read_int(peak)
        return max(self._highest_seen, self._current())

    def oom_kills(self) -> int:
        return parse_flat_keyed(_read(self._directory / "memory.events")).get("oom_kill", 0)

    def cpu_seconds(self) -> float:
        stat = parse_flat_keyed(_read(self._directory / "cpu.stat"))
        return stat.get("usage_usec", 0) / 1e6

    def throttling(self) -> Throttling:
        stat = parse_flat_keyed(_read(self._directory / "cpu.stat"))
        return Throttling(
            periods=stat.get("nr_periods", 0),
            throttled_periods=stat.get("nr_throttled", 0),
            throttled_seconds=stat.get("throttled_usec", 0) / 1e6,
        )


class V2Driver(CgroupDriver):
    version = 2
    primary = "unified"

    container_cgroup_class: ClassVar[type[ContainerCgroup]] = V2ContainerCgroup

    def _prepare_parent(self, directory: Path) -> None:
        enable_controllers(directory)

    def _configure(self, cgroup: ContainerCgroup) -> None:
        resources = cgroup.resources
        directory = cgroup.directories["unified"]
        limit = resources.memory_limit_bytes
        _write(directory / "memory.max", "max" if limit is None else str(limit))
        # Without swap accounting the file is absent, and there is no swap to hide in either.
        if (directory / "memory.swap.max").exists():
            _write(directory / "memory.swap.max", "0")
        _write(directory / "memory.oom.group", "1")
        quota = cpu_quota_microseconds(resources.cpu_limit_millis)
        _write(
            directory / "cpu.max",
            f"{'max' if quota is None else quota} {CFS_PERIOD_MICROSECONDS}",
        )
        shares = cpu_shares(effective_cpu_request_millis(resources))
        _write(directory / "cpu.weight", str(cpu_weight(shares)))

    def _set_pod_cpu(self, run: str, pod: str, shares: int) -> None:
        pod_directory = self.bases["unified"] / run / pod
        if pod_directory.is_dir():
            _write(pod_directory / "cpu.weight", str(cpu_weight(shares)))

    def _set_base_cpu(self, shares: int) -> None:
        _write(self.bases["unified"] / "cpu.weight", str(cpu_weight(shares)))

    def _kill_at_once(self, directory: Path) -> None:
        # cgroup.kill (Linux 5.14) kills a cgroup and its descendants, forks racing it included.
        kill_file = directory / "cgroup.kill"
        if kill_file.exists():
            _write(kill_file, "1")


def enable_controllers(directory: Path) -> None:
    """Let the cgroups below a v2 cgroup use the cpu and memory controllers."""
    subtree_control = directory / "cgroup.subtree_control"
    enabled = set(_read(subtree_control).split())
    missing = [controller for controller in _V2_CONTROLLERS if controller not in enabled]
    if not missing:
        return
    try:
        _write(subtree_control, " ".join(f"+{controller}" for controller in missing))
    except LocalRunError as error:
        raise LocalRunError(
            f"{error} (cgroup v2 passes controllers down only from cgroups that hold no "
            "processes of their own: give the run a parent cgroup without processes)"
        ) from error


# --- Which version this machine has -----------------------------------------------------------


def detect(
    parent: str | None = None,
    *,
    mounts_file: Path = Path("/proc/self/mounts"),
    own_cgroups_file: Path = Path("/proc/self/cgroup"),
) -> CgroupDriver:
    """The driver for this machine's cgroups, with `mlopsctl` below `parent` in each hierarchy.

    `parent` defaults to the caller's own cgroup on v1 and to the root on v2 (see the module
    docstring); on v2 the cpu and memory controllers are enabled down to it. Raises
    `LocalRunError` when no memory controller can be used.
    """
    mounts = parse_mounts(_read(mounts_file))
    own = parse_own_cgroups(_read(own_cgroups_file))
    for mount in mounts:
        if mount.filesystem != "cgroup2":
            continue
        controllers = set(_read(mount.path / "cgroup.controllers").split())
        if "memory" in controllers:
            missing = [name for name in _V2_CONTROLLERS if name not in controllers]
            if missing:
                raise LocalRunError(
                    f"cgroups: the cgroup2 hierarchy at {mount.path} has no {missing} controller; "
                    "CPU limits and requests could not be honoured"
                )
            base = _base(mount, "/" if parent is None else parent)
            _check_usable(mount, base.parent)
            parent_chain = [mount.path]
            for part in base.parent.relative_to(mount.path).parts:
                parent_chain.append(parent_chain[-1] / part)
            for directory in parent_chain:
                enable_controllers(directory)
            return V2Driver({"unified": base})
    v1 = {
        controller: mount
        for mount in reversed(mounts)
        if mount.filesystem == "cgroup"
        for controller in _V1_CONTROLLERS
        if controller in mount.options
    }
    if "memory" not in v1:
        raise LocalRunError(
            "cgroups: no memory controller is mounted (neither a cgroup2 hierarchy with "
            "memory in cgroup.controllers nor a cgroup v1 memory hierarchy in /proc/self/mounts); "
            "memory limits could not be honoured"
        )
    missing = [controller for controller in _V1_CONTROLLERS if controller not in v1]
    if missing:
        raise LocalRunError(
            f"cgroups: no cgroup v1 hierarchy for {', '.join(missing)} is mounted; "
            "CPU limits, requests and usage could not be honoured"
        )
    bases: dict[str, Path] = {}
    for controller in _V1_CONTROLLERS:
        mount = v1[controller]
        own_path = own.get(controller, "/") if parent is None else parent
        bases[controller] = _base(mount, own_path)
        _check_usable(mount, bases[controller].parent)
    return V1Driver(bases)


def _base(mount: Mount, parent: str) -> Path:
    return mount.path / parent.lstrip("/") / ROOT_NAME


def _check_usable(mount: Mount, parent: Path) -> None:
    if "ro" in mount.options:
        raise LocalRunError(f"cgroups: {mount.path} is mounted read-only; cannot make cgroups")
    if not parent.is_dir():
        raise LocalRunError(f"cgroups: the parent cgroup {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise LocalRunError(
            f"cgroups: cannot make cgroups in {parent}: not writable by uid {os.geteuid()} "
            "(the local run needs root to limit containers' resources)"
        )

"""Starts one container's process, as a container runtime would: run as
`python -m mlopsctl.localrun.launcher SPEC.json` by root.

In order: join the network namespace of the pod, make new PID, mount, UTS and IPC namespaces,
fork (the child is PID 1 of the container, as the workload's entry point is in a cluster; this
process stays as its shim and exits with its status), and in the child: join the container's
cgroups, build the container's root from bind mounts (the host's /usr and /etc read-only, the
image's virtualenv and files, the pod's volumes, the pod's /etc/hosts), pivot into it, drop to
the container's user and groups, forbid privilege escalation, and exec the command.

Nothing of the workload runs before it is inside its limits and its namespaces. The spec is
the whole interface; `Spec` documents it. `exec` mode joins a running container's namespaces
instead (exec probes).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import select
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

# runc's exit code when the command cannot be started at all.
EXIT_CANNOT_START = 128


@dataclass
class Bind:
    source: str
    target: str
    read_only: bool = True
    # A file over a file, rather than a directory over a directory.
    is_file: bool = False


@dataclass
class Spec:
    argv: list[str]
    env: dict[str, str]
    working_dir: str
    uid: int
    gid: int
    groups: list[int]
    hostname: str
    # /run/netns/<name>: the pod's network namespace.
    network_namespace: str
    # An empty directory: the container's root is a tmpfs mounted here.
    root: str
    binds: list[Bind] = field(default_factory=list)
    # Private tmpfs mounts (mount path, size in bytes): emptyDir with medium Memory, /dev/shm.
    tmpfs: list[tuple[str, int]] = field(default_factory=list)
    # Symbolic links in the root (path, target): /bin -> usr/bin on a merged-/usr system.
    symlinks: list[tuple[str, str]] = field(default_factory=list)
    # Directories seen through an overlay whose writable layer is the container's own (/etc):
    # mount points and files can be made in them, as in an image's writable layer.
    overlays: list[tuple[str, str]] = field(default_factory=list)
    read_only_root: bool = False
    no_new_privileges: bool = True
    cgroup_procs: list[str] = field(default_factory=list)
    # Where the shim writes the container's PID 1 as the host sees it.
    pid_file: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> Spec:
        raw = json.loads(text)
        raw["binds"] = [Bind(**bind) for bind in raw["binds"]]
        raw["tmpfs"] = [tuple(item) for item in raw["tmpfs"]]
        raw["symlinks"] = [tuple(item) for item in raw.get("symlinks", [])]
        raw["overlays"] = [tuple(item) for item in raw.get("overlays", [])]
        return Spec(**raw)


@dataclass
class ExecSpec:
    """An extra process in a running container (exec probes): its PID 1 names the namespaces."""

    argv: list[str]
    env: dict[str, str]
    working_dir: str
    uid: int
    gid: int
    groups: list[int]
    container_pid: int
    no_new_privileges: bool = True
    cgroup_procs: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"exec": asdict(self)})


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def _mount(
    source: str | None, target: str, kind: str | None, flags: int, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            None if source is None else source.encode(),
            target.encode(),
            None if kind is None else kind.encode(),
            ctypes.c_ulong(flags),
            None if data is None else data.encode(),
        ),
        f"mount {source or kind} on {target}",
    )


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _setns(path: str, kind: int) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(descriptor, kind), f"setns {path}")
    finally:
        os.close(descriptor)


def _pivot_root(new_root: str, put_old: str) -> None:
    number = _PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(0, f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(_libc.syscall(number, new_root.encode(), put_old.encode()), "pivot_root")


def _join_cgroups(procs_files: list[str]) -> None:
    # "0" is the writing process itself: inside a new PID namespace getpid() says 1, and
    # writing 1 would move the host's init.
    for procs in procs_files:
        Path(procs).write_text("0")


def _make_target(path: Path, is_file: bool) -> None:
    if is_file:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    else:
        path.mkdir(parents=True, exist_ok=True)


def _build_root(spec: Spec) -> None:
    root = spec.root
    # Nothing mounted here may reach the host's mount table.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64m")
    for directory in ("proc", "dev", "sys", "tmp", "run", "var/tmp", "etc"):
        Path(root, directory).mkdir(parents=True, exist_ok=True)
    Path(root, "tmp").chmod(0o1777)
    Path(root, "var/tmp").chmod(0o1777)
    for path, target in spec.symlinks:
        Path(root + path).symlink_to(target)
    for index, (source, path) in enumerate(spec.overlays):
        # The writable layer lives in the container's tmpfs, so it goes with the container.
        upper, work = Path(root, f".layers/{index}/upper"), Path(root, f".layers/{index}/work")
        upper.mkdir(parents=True)
        work.mkdir(parents=True)
        target = root + path
        Path(target).mkdir(parents=True, exist_ok=True)
        _mount(
            "overlay",
            target,
            "overlay",
            MS_NOSUID,
            f"lowerdir={source},upperdir={upper},workdir={work}",
        )
    for bind in spec.binds:
        target = root + bind.target
        _make_target(Path(target), bind.is_file)
        _mount(bind.source, target, None, MS_BIND | MS_REC)
        if bind.read_only:
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path, size in spec.tmpfs:
        target = root + path
        Path(target).mkdir(parents=True, exist_ok=True)
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={size}")
    old = Path(root, ".old-root")
    old.mkdir(exist_ok=True)
    _pivot_root(root, str(old))
    os.chdir("/")
    _check(_libc.umount2(b"/.old-root", MNT_DETACH), "umount old root")
    Path("/.old-root").rmdir()
    if spec.read_only_root:
        _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        for _source, path in spec.overlays:
            _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def _die_with_parent(parent_alive: int) -> None:
    """Be killed when the parent dies, and die now if it already has.

    The signal is only sent for a death after it is set: a parent that died between the fork
    and here, or while a credential change had cleared it, would leave this process running.
    getppid cannot tell (a PID namespace's first process sees 0), so the parent holds the write
    end of a pipe whose read end is `parent_alive`: at end-of-file, the parent is gone.
    """
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    if select.select([parent_alive], [], [], 0)[0]:
        os._exit(128 + signal.SIGKILL)


def _drop_privileges(
    uid: int, gid: int, groups: list[int], no_new_privileges: bool, parent_alive: int
) -> None:
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    # Changing credentials clears the parent-death signal (prctl(2)): set it again, or a
    # container that runs as a user outlives its shim.
    _die_with_parent(parent_alive)
    if no_new_privileges:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")


def _resolve(command: str, env: dict[str, str]) -> str:
    if "/" in command:
        return command
    for directory in env.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":"):
        candidate = Path(directory or ".", command)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(f'exec: "{command}": executable file not found in $PATH')


def _exec(argv: list[str], env: dict[str, str], working_dir: str) -> None:
    try:
        os.chdir(working_dir)
    except OSError as error:
        print(
            f"chdir to cwd ({working_dir!r}) set in config.json failed: {error.strerror}",
            file=sys.stderr,
        )
        os._exit(EXIT_CANNOT_START)
    try:
        os.execve(_resolve(argv[0], env), argv, env)
    except OSError as error:
        print(f"failed to start container process: {error}", file=sys.stderr)
        os._exit(EXIT_CANNOT_START)


def _child(spec: Spec, parent_alive: int) -> None:
    try:
        # The shim dying (the run killed) takes the container with it.
        _die_with_parent(parent_alive)
        _join_cgroups(spec.cgroup_procs)
        _unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC)
        _check(_libc.sethostname(spec.hostname.encode(), len(spec.hostname)), "sethostname")
        _build_root(spec)
        _drop_privileges(spec.uid, spec.gid, spec.groups, spec.no_new_privileges, parent_alive)
    except OSError as error:
        print(f"cannot create the container: {error}", file=sys.stderr)
        os._exit(EXIT_CANNOT_START)
    _exec(spec.argv, spec.env, spec.working_dir)


def _wait_as_shim(child: int) -> int:
    # Signals for the container go to its PID 1 directly (the kubelet knows it from pid_file);
    # the shim only outlives it to report the status.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            _pid, status = os.waitpid(child, 0)
        except ChildProcessError:
            return EXIT_CANNOT_START
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)


def run(spec: Spec) -> int:
    _setns(spec.network_namespace, CLONE_NEWNET)
    _unshare(CLONE_NEWPID)
    # The run dying (killed) takes the shim with it, and the shim the container.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Closed on exec (os.pipe's descriptors are not inheritable): the workload never sees it.
    parent_alive, shim_alive = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(shim_alive)
        _child(spec, parent_alive)
        os._exit(EXIT_CANNOT_START)  # not reached: _child execs or exits
    os.close(parent_alive)
    if spec.pid_file:
        temporary = spec.pid_file + ".tmp"
        Path(temporary).write_text(str(child))
        Path(temporary).replace(spec.pid_file)
    return _wait_as_shim(child)


def run_exec(spec: ExecSpec) -> int:
    namespaces = f"/proc/{spec.container_pid}/ns"
    _join_cgroups(spec.cgroup_procs)
    for name, kind in (
        ("net", CLONE_NEWNET),
        ("uts", CLONE_NEWUTS),
        ("ipc", CLONE_NEWIPC),
        ("pid", CLONE_NEWPID),
    ):
        _setns(f"{namespaces}/{name}", kind)
    # The mount namespace last: after it, /proc/<pid> of the host is gone from view.
    root = os.open(f"/proc/{spec.container_pid}/root", os.O_RDONLY)
    _setns(f"{namespaces}/mnt", CLONE_NEWNS)
    os.fchdir(root)
    os.chroot(".")
    os.close(root)
    parent_alive, shim_alive = os.pipe()
    child = os.fork()  # joining a PID namespace takes effect for children only
    if child == 0:
        os.close(shim_alive)
        try:
            _die_with_parent(parent_alive)
            _drop_privileges(spec.uid, spec.gid, spec.groups, spec.no_new_privileges, parent_alive)
        except OSError as error:
            print(f"cannot enter the container: {error}", file=sys.stderr)
            os._exit(EXIT_CANNOT_START)
        _exec(spec.argv, spec.env, spec.working_dir)
    os.close(parent_alive)
    return _wait_as_shim(child)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m mlopsctl.localrun.launcher SPEC.json", file=sys.stderr)
        return 2
    text = Path(argv[0]).read_text()
    raw = json.loads(text)
    try:
        if "exec" in raw:
            return run_exec(ExecSpec(**raw["exec"]))
        return run(Spec.from_json(text))
    except OSError as error:
        print(f"cannot create the container: {error}", file=sys.stderr)
        return EXIT_CANNOT_START


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

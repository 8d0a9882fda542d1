"""The launcher starts a container's process as a runtime would: run for real, as the kubelet runs
it (`python -m mlopsctl.localrun.launcher SPEC.json`, as root), with a network namespace of the
test's own, and a probe program inside that reports what the process sees."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mlopsctl.localrun import cgroups, launcher
from mlopsctl.localrun.launcher import Bind, ExecSpec, Spec
from mlopsctl.localrun.model import Resources
from tests.support.processes import ended

pytestmark = pytest.mark.usefixtures("as_root")

TIMEOUT = 60
USER, GROUP, SUPPLEMENTARY = 65534, 65534, 4242

# What a process inside the container sees, as JSON on stdout.
PROBE = textwrap.dedent(
    """
    import errno, json, os, socket, sys

    def writable(path):
        try:
            with open(os.path.join(path, ".probe"), "w") as file:
                file.write("written inside")
            return "yes"
        except OSError as error:
            return errno.errorcode[error.errno]

    status = dict(
        line.split(":", 1) for line in open("/proc/self/status").read().splitlines()
    )
    print(json.dumps({
        "argv": sys.argv[1:],
        "env": dict(os.environ),
        "ids": [os.getuid(), os.geteuid(), os.getgid(), sorted(os.getgroups())],
        "cwd": os.getcwd(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "no_new_privs": status["NoNewPrivs"].strip(),
        "network": os.stat("/proc/self/ns/net").st_ino,
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "cgroups": open("/proc/self/cgroup").read(),
        "root": sorted(os.listdir("/")),
        "visible": {path: os.path.exists(path) for path in sys.stdin.read().split()},
        "writable": {path: writable(path) for path in ("/out", "/config", "/dev/shm", "/tmp")},
    }))
    """
)


@pytest.fixture
def network_namespace() -> Iterator[str]:
    name = f"launcher-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def spec(tmp_path: Path, network_namespace: str) -> Spec:
    """A container of a pod, as the kubelet describes it: the host's /usr read-only, a volume
    with the probe (read-only) and one to write to, /dev/null, and the image's /etc."""
    config = tmp_path / "config"
    config.mkdir()
    config.chmod(0o777)  # read-only by its mount alone
    (config / "probe.py").write_text(PROBE)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    root = tmp_path / "root"
    root.mkdir()
    symlinks = [
        (f"/{name}", str(Path(f"/{name}").readlink()))
        for name in ("bin", "sbin", "lib", "lib64")
        if Path(f"/{name}").is_symlink()
    ]
    binds = [
        Bind(f"/{name}", f"/{name}")
        for name in ("usr", "bin", "sbin", "lib", "lib64")
        if Path(f"/{name}").is_dir() and not Path(f"/{name}").is_symlink()
    ]
    binds += [
        Bind("/dev/null", "/dev/null", read_only=False, is_file=True),
        Bind(str(config), "/config"),
        Bind(str(out), "/out", read_only=False),
    ]
    return Spec(
        argv=["python3", "/config/probe.py"],
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "GREETING": "hello from the manifest",
        },
        working_dir="/config",
        uid=USER,
        gid=GROUP,
        groups=[GROUP, SUPPLEMENTARY],
        hostname="web-7d9f8-x2k4q",
        network_namespace=network_namespace,
        root=str(root),
        binds=binds,
        tmpfs=[("/dev/shm", 2**20)],
        symlinks=symlinks,
        overlays=[("/etc", "/etc")],
        pid_file=str(tmp_path / "container.pid"),
    )


def launch(
    spec: Spec, directory: Path, stdin: str = "", wait: bool = True
) -> subprocess.CompletedProcess[str]:
    path = directory / f"spec-{secrets.token_hex(3)}.json"
    path.write_text(spec.to_json())
    return subprocess.run(
        [sys.executable, "-m", "mlopsctl.localrun.launcher", str(path)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def start(spec: Spec, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The launcher started in the background, as the kubelet starts it; its container's PID."""
    Path(spec.pid_file).unlink(missing_ok=True)
    path = directory / f"spec-{secrets.token_hex(3)}.json"
    path.write_text(spec.to_json())
    shim = subprocess.Popen([sys.executable, "-m", "mlopsctl.localrun.launcher", str(path)])
    return shim, wait_for_pid(Path(spec.pid_file), shim)


def probe(spec: Spec, directory: Path, look_for: tuple[str, ...] = ()) -> dict[str, Any]:
    completed = launch(spec, directory, " ".join(look_for))
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


def test_the_process_gets_exactly_the_command_env_user_and_directory_of_its_spec(
    spec: Spec, tmp_path: Path, network_namespace: str
):
    arguments = ["two words", "$(NOT_EXPANDED) $HOME", "quote'\"; rm -rf /", "ünïcode", ""]
    seen = probe(replace(spec, argv=[*spec.argv, *arguments]), tmp_path)
    # Passed as they are: no shell, no expansion (the kubelet expands $(VAR) before).
    assert seen["argv"] == arguments
    # Only the spec's environment: nothing of the caller's leaks in.
    assert seen["env"] == spec.env
    assert seen["ids"] == [USER, USER, GROUP, sorted([GROUP, SUPPLEMENTARY])]
    assert seen["cwd"] == "/config"
    assert seen["hostname"] == "web-7d9f8-x2k4q"
    # PID 1 of its own PID namespace, as an entry point is in a pod, and unable to gain
    # privileges (setuid programs do not raise it).
    assert seen["pid"] == 1
    assert seen["no_new_privs"] == "1"
    # The pod's network namespace: its loopback and nothing of the host's interfaces.
    assert seen["network"] == Path(network_namespace).stat().st_ino
    assert seen["interfaces"] == ["lo"]


def test_the_container_sees_only_what_is_mounted_into_it(spec: Spec, tmp_path: Path):
    host_only = [str(tmp_path), "/root", "/work", "/var/lib"]
    seen = probe(spec, tmp_path, look_for=(*host_only, "/config/probe.py", "/usr/bin/python3"))
    assert seen["visible"] == {
        **dict.fromkeys(host_only, False),
        "/config/probe.py": True,
        "/usr/bin/python3": True,
    }
    assert seen["writable"] == {"/out": "yes", "/config": "EROFS", "/dev/shm": "yes", "/tmp": "yes"}
    # What the container wrote to its volume is on the host; its tmpfs went with it.
    assert (tmp_path / "out" / ".probe").read_text() == "written inside"
    assert not (tmp_path / "root" / "tmp" / ".probe").exists()
    # A read-only root: only the volumes stay writable.
    read_only = probe(replace(spec, read_only_root=True), tmp_path)
    assert read_only["writable"] == {
        "/out": "yes",
        "/config": "EROFS",
        "/dev/shm": "yes",
        "/tmp": "EROFS",
    }


def test_the_process_is_in_its_cgroups_before_it_runs(spec: Spec, tmp_path: Path):
    driver = cgroups.detect()
    run = f"launcher-{secrets.token_hex(4)}"
    try:
        cgroup = driver.create(run, "web", "main", Resources(memory_limit_bytes=64 * 2**20))
        seen = probe(
            replace(spec, cgroup_procs=[str(path) for path in cgroup.procs_files()]), tmp_path
        )
        # /proc/self/cgroup: "ID:CONTROLLERS:PATH" per hierarchy, PATH below its mount point.
        paths = [line.split(":", 2)[2] for line in seen["cgroups"].splitlines()]
        for leaf in cgroup.leaves:
            assert any(
                str(leaf).endswith(path) and f"/mlopsctl/{run}/" in path for path in paths
            ), (leaf, paths)
    finally:
        driver.remove_run(run)


def test_the_exit_status_is_the_containers(spec: Spec, tmp_path: Path):
    exits = replace(spec, argv=["/bin/sh", "-c", "echo failing >&2; exit 3"])
    completed = launch(exits, tmp_path)
    assert (completed.returncode, completed.stderr) == (3, "failing\n")
    # Killed by a signal: 128 + the signal, as a runtime reports it (137 for SIGKILL).
    shim, pid = start(replace(spec, argv=["/bin/sh", "-c", "exec sleep 60"]), tmp_path)
    try:
        # The pid file names the container's PID 1 as the host sees it.
        assert Path(f"/proc/{pid}/status").read_text().split("NSpid:")[1].split()[1] == "1"
        os.kill(pid, signal.SIGKILL)
        assert shim.wait(timeout=TIMEOUT) == 128 + signal.SIGKILL
    finally:
        shim.kill()
        shim.wait()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"argv": ["no-such-program"]}, 'exec: "no-such-program": executable file not found'),
        ({"argv": ["/config/probe.py"]}, "Permission denied"),
        ({"working_dir": "/no/such/directory"}, "chdir to cwd ('/no/such/directory')"),
    ],
)
def test_a_command_that_cannot_start_is_reported_as_a_runtime_reports_it(
    spec: Spec, tmp_path: Path, change: dict[str, Any], message: str
):
    completed = launch(replace(spec, **change), tmp_path)
    assert completed.returncode == launcher.EXIT_CANNOT_START
    assert message in completed.stderr


def wait_for_pid(path: Path, shim: subprocess.Popen[bytes] | None = None) -> int:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            assert shim is None or shim.poll() is None, "the launcher ended before its container"
            time.sleep(0.02)
    raise AssertionError(f"{path} was never written")


def test_exec_runs_inside_the_running_container(spec: Spec, tmp_path: Path):
    """An exec probe: the container's namespaces, root and user, its exit code."""
    running = replace(spec, argv=["/bin/sh", "-c", "echo ready > /out/state; exec sleep 60"])
    shim, pid = start(running, tmp_path)
    try:
        script = (
            "hostname; id -u; tr '\\0' ' ' < /proc/1/cmdline; echo; cat /out/state; "
            f"test -e {tmp_path} && echo host-visible; exit 7"
        )
        exec_spec = ExecSpec(
            argv=["/bin/sh", "-c", script],
            env={"PATH": "/usr/bin:/bin"},
            working_dir="/",
            uid=USER,
            gid=GROUP,
            groups=[GROUP],
            container_pid=pid,
        )
        exec_path = tmp_path / "exec.json"
        exec_path.write_text(exec_spec.to_json())
        completed = subprocess.run(
            [sys.executable, "-m", "mlopsctl.localrun.launcher", str(exec_path)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert completed.returncode == 7, completed.stderr
        assert completed.stdout.splitlines() == [
            "web-7d9f8-x2k4q",
            str(USER),
            "sleep 60 ",
            "ready",
        ]
        assert shim.poll() is None  # the container runs on
    finally:
        shim.kill()
        shim.wait()


KILLED_KUBELET = textwrap.dedent(
    """
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-m", "mlopsctl.localrun.launcher", sys.argv[1]])
    time.sleep(300)
    """
)


def test_a_killed_kubelet_takes_its_containers_with_it(spec: Spec, tmp_path: Path):
    """The shim dies with the process that started it, and the container with its shim, even
    once it runs as a user of its own."""
    running = replace(spec, argv=["/bin/sh", "-c", "exec sleep 300"])
    path = tmp_path / "running.json"
    path.write_text(running.to_json())
    kubelet = subprocess.Popen([sys.executable, "-c", KILLED_KUBELET, str(path)])
    pid = None
    try:
        pid = wait_for_pid(Path(spec.pid_file))
        kubelet.kill()
        kubelet.wait()
        deadline = time.monotonic() + 10
        while not ended(pid):
            assert time.monotonic() < deadline, "the container outlived its kubelet"
            time.sleep(0.05)
    finally:
        kubelet.kill()
        kubelet.wait()
        if pid is not None and not ended(pid):
            os.kill(pid, signal.SIGKILL)


def child_of_a_parent_that(is_alive: bool) -> int:
    """The exit status of a child that arms its parent-death signal after a fork, its parent
    (the shim) already dead or still alive: the window the signal alone cannot cover."""
    parent_alive, shim_alive = os.pipe()
    if not is_alive:
        os.close(shim_alive)
    child = os.fork()
    if child == 0:
        if is_alive:
            os.close(shim_alive)
        launcher._die_with_parent(parent_alive)
        os._exit(0)
    os.close(parent_alive)
    _pid, status = os.waitpid(child, 0)
    if is_alive:
        os.close(shim_alive)
    return os.waitstatus_to_exitcode(status)


def test_a_container_whose_shim_died_before_it_armed_the_signal_ends_at_once():
    assert child_of_a_parent_that(is_alive=False) == 128 + signal.SIGKILL
    assert child_of_a_parent_that(is_alive=True) == 0


def test_the_spec_survives_its_json_form(spec: Spec):
    """The kubelet writes the spec as JSON and the launcher reads it back."""
    assert Spec.from_json(spec.to_json()) == spec

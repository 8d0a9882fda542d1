"""Every git command mlopsctl runs is bounded in time: against a remote that accepts the
connection and then says nothing, git fails instead of holding the promoter forever, and leaves
no process behind."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlopsctl import service
from mlopsctl.base import git
from mlopsctl.base.errors import GitError, GitTimeout, MlopsctlError
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.base.toolchain import resolve
from mlopsctl.localrun import certificates
from mlopsctl.localrun.githost import GitHost
from tests.support.paths import TOOLS_DIR

# The deadline the tests configure, and the bound that only proves "does not hang forever".
DEADLINE_SECONDS = 2
UPPER_BOUND_SECONDS = 60
IDENTITY = ("-c", "user.name=Test", "-c", "user.email=test@example.test")


class HungRemote:
    """A thin stand-in for a hung git remote: it accepts TCP connections and never answers
    (nor reads), as a server or proxy that stalled after the handshake does."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _peer = self._listener.accept()
            except OSError:
                return  # shut down
            self.connections.append(connection)

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials}127.0.0.1:{self.port}/repo.git"

    def closed_by_every_client(self, seconds: float = 10) -> bool:
        """Whether every connection it accepted was closed by the other end (the client
        process is gone), read until end of stream within a generous bound."""
        deadline = time.monotonic() + seconds
        for connection in list(self.connections):
            while True:
                connection.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    if not connection.recv(65536):
                        break
                except TimeoutError:
                    return False
                except OSError:
                    break  # reset by the peer: closed as well
        return True

    def close(self) -> None:
        if self._listener.fileno() == -1:
            return
        # Shut down, not only closed: a close leaves the thread blocked in accept, and it then
        # took (and dropped) connections meant for the next socket given the same descriptor.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._accepting.join(UPPER_BOUND_SECONDS)
        self._listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def hung_remote() -> Iterator[HungRemote]:
    remote = HungRemote()
    try:
        yield remote
    finally:
        # Closing the connections also frees any git a failing test left waiting.
        remote.close()


def raised_within(seconds: float, call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """What `call` raised (None if it returned) and how long it took; fails the test, instead
    of hanging it, when the call has not returned after `seconds`."""
    outcome: dict[str, BaseException] = {}

    def target() -> None:
        try:
            call()
        except BaseException as error:  # handed to the test to judge
            outcome["error"] = error

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"still running after {seconds} s: it hangs"
    return outcome.get("error"), elapsed


def live_processes_mentioning(text: str) -> list[str]:
    """Processes (zombies aside) whose command line contains `text`, from a /proc scan."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            command_line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        if text in command_line and state != "Z":
            found.append(f"{entry.name}: {command_line}")
    return found


def live_git_children() -> list[str]:
    """git processes this test process started that still run."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, rest = (entry / "stat").read_text().split(" (", 1)[1].rsplit(") ", 1)
        except (OSError, ValueError):
            continue
        state, parent = rest.split()[:2]
        if int(parent) == os.getpid() and name.startswith("git") and state != "Z":
            children.append(f"{entry.name}: {name}")
    return children


def assert_nothing_left(remote: HungRemote) -> None:
    assert remote.connections, "git never reached the hung remote"
    assert remote.closed_by_every_client(), "a process still holds a connection to the remote"
    assert live_processes_mentioning(f"127.0.0.1:{remote.port}") == []
    assert live_git_children() == []


def repository_with_origin(directory: Path, origin: str) -> Path:
    """A repository with one commit on main whose origin is `origin`."""
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(directory)], check=True)
    (directory / "pin.yaml").write_text("version: 1\n")
    subprocess.run(["git", "add", "pin.yaml"], cwd=directory, check=True)
    subprocess.run(["git", *IDENTITY, "commit", "--quiet", "-m", "one"], cwd=directory, check=True)
    subprocess.run(["git", "remote", "add", "origin", origin], cwd=directory, check=True)
    return directory


OPERATIONS: dict[str, Callable[[str, Path], Any]] = {
    "clone": lambda url, scratch: git.clone(
        url, "main", scratch / "clone", timeout_seconds=DEADLINE_SECONDS
    ),
    "push": lambda url, scratch: git.push(
        repository_with_origin(scratch / "repository", url),
        "HEAD:refs/heads/main",
        timeout_seconds=DEADLINE_SECONDS,
    ),
    "fetch": lambda url, scratch: git.reset_to_remote(
        repository_with_origin(scratch / "repository", url),
        "main",
        timeout_seconds=DEADLINE_SECONDS,
    ),
    "ls-remote": lambda url, _scratch: git.git_at(
        "ls-remote", "--heads", url, "main", timeout_seconds=DEADLINE_SECONDS
    ),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_git_against_a_hung_remote_fails_in_time_and_leaves_no_process(
    operation: str, hung_remote: HungRemote, tmp_path: Path
) -> None:
    url = hung_remote.url(credentials="someone:secret-password@")
    error, elapsed = raised_within(
        UPPER_BOUND_SECONDS, lambda: OPERATIONS[operation](url, tmp_path)
    )
    assert isinstance(error, GitError), error
    message = str(error)
    assert f"git {operation} " in message and f"timed out after {DEADLINE_SECONDS} s" in message
    assert f"http://***@127.0.0.1:{hung_remote.port}/repo.git" in message
    assert "secret-password" not in message and "someone" not in message
    assert_nothing_left(hung_remote)
    print(f"{operation} against a hung remote failed after {elapsed:.2f} s")


def test_a_timed_out_push_says_its_outcome_is_unknown(
    hung_remote: HungRemote, tmp_path: Path
) -> None:
    error, _elapsed = raised_within(
        UPPER_BOUND_SECONDS, lambda: OPERATIONS["push"](hung_remote.url(), tmp_path)
    )
    assert "whether the remote took the push is not known" in str(error)


def test_a_timeout_of_git_at_is_still_the_timeout_its_callers_catch(
    hung_remote: HungRemote,
) -> None:
    # service.ready catches subprocess.TimeoutExpired from git_at and reports "timed out".
    error, _elapsed = raised_within(
        UPPER_BOUND_SECONDS,
        lambda: git.git_at("ls-remote", hung_remote.url(), timeout_seconds=DEADLINE_SECONDS),
    )
    assert isinstance(error, subprocess.TimeoutExpired) and isinstance(error, GitTimeout)
    assert error.timeout == DEADLINE_SECONDS


def test_the_environment_variable_sets_the_deadline_of_network_commands(
    hung_remote: HungRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(git.TIMEOUT_VARIABLE, "1.5")
    error, _elapsed = raised_within(
        UPPER_BOUND_SECONDS, lambda: git.clone(hung_remote.url(), "main", tmp_path / "clone")
    )
    assert isinstance(error, GitTimeout), error
    assert "git clone " in str(error) and "timed out after 1.5 s" in str(error)
    assert git.TIMEOUT_VARIABLE in str(error)  # where to make it longer
    assert_nothing_left(hung_remote)


def test_without_the_variable_network_commands_get_the_module_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(git.TIMEOUT_VARIABLE, raising=False)
    assert git.network_timeout_seconds() == git.NETWORK_TIMEOUT_SECONDS == 120
    monkeypatch.setenv(git.TIMEOUT_VARIABLE, " ")
    assert git.network_timeout_seconds() == 120


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf", "1e999"])
def test_a_bad_timeout_is_refused_with_a_clear_message(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(git.TIMEOUT_VARIABLE, value)
    with pytest.raises(MlopsctlError) as refused:
        git.clone(str(tmp_path / "never-read.git"), "main", tmp_path / "clone")
    assert str(refused.value) == (
        f"{git.TIMEOUT_VARIABLE}={value!r} is not a git timeout: give a positive number of seconds"
    )
    assert not (tmp_path / "clone").exists()  # refused before git ran


def test_a_bad_timeout_given_to_a_call_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MlopsctlError, match="timeout_seconds=0 is not a git timeout"):
        git.git(tmp_path, "--version", timeout_seconds=0)


def test_local_commands_are_bounded_too_and_their_children_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A shell alias stands in for a stuck hook: git starts a child that never ends.
    # Finite, so that even a sleep left behind (the failure shown) ends in the end.
    marker = f"{UPPER_BOUND_SECONDS * 2}.{time.time_ns() % 10**9}"
    monkeypatch.setattr(git, "LOCAL_TIMEOUT_SECONDS", 1.0)
    error, _elapsed = raised_within(
        UPPER_BOUND_SECONDS,
        lambda: git.git(tmp_path, "-c", f"alias.stuck=!sleep {marker}", "stuck"),
    )
    assert isinstance(error, GitTimeout), error
    assert str(error) == "git stuck timed out after 1 s and was stopped"
    assert live_processes_mentioning(f"sleep {marker}") == []
    assert live_git_children() == []


def test_the_http_low_speed_limits_reach_git(tmp_path: Path) -> None:
    repository = repository_with_origin(tmp_path / "repository", "http://127.0.0.1:9/repo.git")
    setting = functools.partial(git.git, repository, "config", "--get")
    assert setting("http.lowSpeedLimit").stdout.strip() == "1000"
    assert setting("http.lowSpeedTime").stdout.strip() == "30"


def test_a_stalled_http_transfer_fails_on_its_own_before_the_deadline(
    hung_remote: HungRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(git, "LOW_SPEED_TIME_SECONDS", 1)
    outcome: list[subprocess.CompletedProcess[str]] = []
    error, _elapsed = raised_within(
        UPPER_BOUND_SECONDS,
        lambda: outcome.append(
            git.git_at("ls-remote", hung_remote.url(), timeout_seconds=UPPER_BOUND_SECONDS)
        ),
    )
    assert error is None, error  # git gave up by itself: the deadline was not needed
    assert outcome[0].returncode != 0
    assert "Operation too slow" in outcome[0].stderr


def test_settings_of_the_environment_and_the_token_merge_with_the_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's own git settings, passed the way git documents (GIT_CONFIG_COUNT/KEY/VALUE).
    monkeypatch.setenv("GIT_CONFIG_COUNT", "2")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "http.lowSpeedTime")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "45")
    monkeypatch.setenv("GIT_CONFIG_KEY_1", "http.extraHeader")
    monkeypatch.setenv("GIT_CONFIG_VALUE_1", "X-Operator: yes")
    credentials = git.Credentials(token="a-token")
    repository = repository_with_origin(tmp_path / "repository", "http://127.0.0.1:9/repo.git")
    listed = git.git(
        repository, "config", "--get-all", "http.extraHeader", credentials=credentials
    ).stdout
    assert listed.splitlines() == [
        "X-Operator: yes",
        "Authorization: Basic eC1hY2Nlc3MtdG9rZW46YS10b2tlbg==",
    ]
    setting = functools.partial(git.git, repository, "config", "--get")
    assert setting("http.lowSpeedTime").stdout.strip() == "45"  # the operator's wins
    assert setting("http.lowSpeedLimit").stdout.strip() == "1000"
    assert os.environ["GIT_CONFIG_COUNT"] == "2"  # the process's own environment is untouched


def test_an_incoherent_inherited_git_config_list_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GIT_CONFIG_COUNT", "2")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "http.lowSpeedTime")
    monkeypatch.delenv("GIT_CONFIG_KEY_1", raising=False)
    with pytest.raises(MlopsctlError, match="GIT_CONFIG_COUNT is 2 but GIT_CONFIG_KEY_1"):
        git.git_at("--version")


def test_a_token_still_authenticates_to_a_real_host_alongside_the_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local run's git host (real git over TLS, pushes need the token)."""
    authority = certificates.create_authority(tmp_path / "pki", "git timeouts test")
    server = certificates.issue(authority, tmp_path / "pki", ["localhost"], ["127.0.0.1"])
    bare = tmp_path / "platform.git"
    repository_with_origin(tmp_path / "seed", str(bare))
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "push", "--quiet", "origin", "main"], cwd=tmp_path / "seed", check=True)
    monkeypatch.setenv("GIT_SSL_CAINFO", str(authority.certificate))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    log: list[str] = []
    with GitHost(
        ("127.0.0.1", 0),
        server.certificate,
        server.key,
        {"/org/platform.git": bare},
        "tok-1",
        log.append,
    ) as host:
        url = f"https://127.0.0.1:{host.address[1]}/org/platform.git"
        remote = git.Remote(url, git.Credentials(token="tok-1"))
        clone = remote.clone("main", tmp_path / "clone")
        assert git.git(clone, "config", "--get", "http.lowSpeedLimit").stdout.strip() == "1000"
        (clone / "pin.yaml").write_text("version: 2\n")
        author = git.Author("Test", "test@example.test")
        commit = git.commit(clone, ["pin.yaml"], "two", "", [], author)
        assert remote.push(clone, "HEAD:refs/heads/main")
        landed = subprocess.run(
            ["git", "--git-dir", str(bare), "rev-parse", "main"], capture_output=True, text=True
        )
        assert landed.stdout.strip() == commit
        # The header is what authenticated: without it the same push is refused.
        (clone / "pin.yaml").write_text("version: 3\n")
        git.commit(clone, ["pin.yaml"], "three", "", [], author)
        with pytest.raises(GitError):
            git.push(clone, "HEAD:refs/heads/main")


def test_the_ssh_command_carries_the_limits_with_and_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("GIT_SSH_COMMAND", "GIT_SSH"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    limits = "-o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4"
    assert git._environment()["GIT_SSH_COMMAND"] == f"ssh {limits}"
    keyed = git._environment(credentials=git.Credentials(ssh_key_file=str(tmp_path / "key")))[
        "GIT_SSH_COMMAND"
    ]
    assert keyed.startswith(f"ssh -i {tmp_path / 'key'} ") and keyed.endswith(limits)
    assert "BatchMode=yes" in keyed


def test_an_ssh_command_the_operator_chose_is_left_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GIT_SSH", raising=False)
    monkeypatch.setenv("GIT_SSH_COMMAND", "my-ssh-wrapper")
    assert git._environment()["GIT_SSH_COMMAND"] == "my-ssh-wrapper"
    monkeypatch.delenv("GIT_SSH_COMMAND")
    configured = tmp_path / "gitconfig"
    configured.write_text("[core]\n\tsshCommand = ssh -i /keys/work\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(configured))
    assert "GIT_SSH_COMMAND" not in git._environment()
    assert "GIT_SSH_COMMAND" not in git._environment(network=False)


def test_a_silent_ssh_server_fails_on_its_own_before_the_deadline(
    hung_remote: HungRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("GIT_SSH_COMMAND", "GIT_SSH"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setattr(git, "SSH_CONNECT_TIMEOUT_SECONDS", 1)
    outcome: list[subprocess.CompletedProcess[str]] = []
    url = f"ssh://git@127.0.0.1:{hung_remote.port}/repo.git"
    error, _elapsed = raised_within(
        UPPER_BOUND_SECONDS,
        lambda: outcome.append(git.git_at("ls-remote", url, timeout_seconds=UPPER_BOUND_SECONDS)),
    )
    assert error is None, error  # ssh gave up by itself: the deadline was not needed
    assert outcome[0].returncode != 0
    assert "timed out during banner exchange" in outcome[0].stderr


def test_the_promoter_reports_a_timed_out_pass_retries_it_and_stops_in_time(
    hung_remote: HungRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(git.TIMEOUT_VARIABLE, str(DEADLINE_SECONDS))
    log: list[str] = []
    settings = service.Settings(
        remote=hung_remote.url(),
        branch="main",
        registry=MlflowRegistry("http://127.0.0.1:9"),  # never reached: the clone comes first
        toolchain=resolve(TOOLS_DIR),
        webhook_secret="a-secret",
        environments=("local",),
        interval_seconds=1,
        log=log.append,
    )
    running = service.Service(settings, ("127.0.0.1", 0))
    running.start()
    stopper: threading.Thread | None = None
    try:
        deadline = time.monotonic() + UPPER_BOUND_SECONDS
        while running.reconciler.passes < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running.reconciler.passes >= 2, log  # the first failed, the timer ran another
        samples = running.metrics.registry.get_sample_value
        errors = sum(
            samples("mlopsctl_reconcile_passes_total", {"trigger": trigger, "result": "error"}) or 0
            for trigger in ("startup", "timer")
        )
        assert errors >= 2
        failures = [line for line in log if "failed: " in line]
        assert failures[0].startswith("reconcile (startup) failed: git clone with http://127.0.0")
        assert f"timed out after {DEADLINE_SECONDS} s" in failures[0]
        # Stop while a pass waits on the remote: stop() waits for it, and so for its deadline.
        connected = len(hung_remote.connections)
        while len(hung_remote.connections) == connected and time.monotonic() < deadline:
            time.sleep(0.05)
        stopper = threading.Thread(target=running.stop, daemon=True)
        started = time.monotonic()
        stopper.start()
        stopper.join(UPPER_BOUND_SECONDS)
        assert not stopper.is_alive(), "Service.stop() hangs on the pass in flight"
        print(f"stop() with a pass in flight returned after {time.monotonic() - started:.2f} s")
    finally:
        if stopper is None:
            # Failed before stopping: free a git that waits on the remote, or stop() waits too.
            hung_remote.close()
            running.stop()
    assert_nothing_left(hung_remote)

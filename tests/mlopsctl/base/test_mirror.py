"""The persistent mirror: fetched and reset hard before each use, rebuilt when it cannot be
trusted, never lost to a remote that is down, never shared by two processes at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlopsctl.base import git
from mlopsctl.base.errors import GitError, MlopsctlError
from mlopsctl.base.mirror import (
    MIRROR_DIRECTORY_VARIABLE,
    Mirror,
    checked_mirrors_directory,
    mirror_directory,
    mirrors_directory,
    open_checkout,
)
from tests.support.paths import REPOSITORY
from tests.support.processes import StallingUploadPack, git_processes_in

IDENTITY = ("-c", "user.name=t", "-c", "user.email=t@example.test")


def run_git(directory: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=directory, check=True, capture_output=True, text=True
    ).stdout


class Upstream:
    """A bare remote and a checkout that pushes to it, as another writer would."""

    def __init__(self, directory: Path) -> None:
        self.checkout = directory / "upstream"
        self.remote = directory / "remote.git"
        self.checkout.mkdir(parents=True)
        run_git(self.checkout, "init", "--quiet", "--initial-branch=main")
        (self.checkout / ".gitignore").write_text("*.log\n")
        self.commit("pins.yaml", "version: 1\n")
        run_git(directory, "clone", "--quiet", "--bare", str(self.checkout), str(self.remote))
        run_git(self.checkout, "remote", "add", "origin", str(self.remote))

    def commit(self, name: str, text: str) -> str:
        (self.checkout / name).write_text(text)
        run_git(self.checkout, "add", "--all")
        run_git(self.checkout, *IDENTITY, "commit", "--quiet", "-m", f"write {name}")
        if (self.remote / "HEAD").exists():
            run_git(self.checkout, "push", "--quiet", "origin", "main")
        return run_git(self.checkout, "rev-parse", "HEAD").strip()

    def head(self) -> str:
        return run_git(self.remote, "rev-parse", "main").strip()


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path)


def mirror_of(upstream: Upstream, tmp_path: Path, log: list[str] | None = None) -> Mirror:
    remote = git.Remote(str(upstream.remote))
    return Mirror(
        mirror_directory(tmp_path / "mirrors", remote),
        remote,
        (log if log is not None else []).append,
    )


def same_clone_marker(mirror: Mirror) -> Path:
    """A file in the mirror's .git that only survives as long as the clone itself does."""
    marker = mirror.directory / ".git" / "test-marker"
    marker.write_text("the same clone")
    return marker


def assert_at_remote_head(checkout: Path, upstream: Upstream) -> None:
    assert run_git(checkout, "rev-parse", "HEAD").strip() == upstream.head()
    assert run_git(checkout, "status", "--porcelain", "--ignored") == ""
    assert run_git(checkout, "branch", "--show-current").strip() == "main"


def test_the_second_use_fetches_into_the_same_clone(upstream: Upstream, tmp_path: Path):
    mirror = mirror_of(upstream, tmp_path)
    with mirror.checkout("main") as first:
        assert first == mirror.directory
        assert (first / "pins.yaml").read_text() == "version: 1\n"
    marker = same_clone_marker(mirror)
    upstream.commit("pins.yaml", "version: 2\n")
    with mirror.checkout("main") as second:
        assert second == first
        assert (second / "pins.yaml").read_text() == "version: 2\n"
        assert_at_remote_head(second, upstream)
    assert marker.exists(), "the mirror was cloned again instead of fetched"


def test_whatever_a_pass_left_behind_is_gone_at_the_next_use(upstream: Upstream, tmp_path: Path):
    mirror = mirror_of(upstream, tmp_path)
    with mirror.checkout("main") as clone:
        (clone / "pins.yaml").write_text("version: 99\n")  # an edit that did not validate
        run_git(clone, *IDENTITY, "commit", "--quiet", "-am", "a commit whose push failed")
        (clone / "pins.yaml").write_text("version: 100\n")
        (clone / "untracked.yaml").write_text("left over\n")
        (clone / "debug.log").write_text("ignored, still left over\n")
        run_git(clone, "checkout", "--quiet", "-b", "mlopsctl/promote/local/model")
    marker = same_clone_marker(mirror)
    with mirror.checkout("main") as clone:
        assert (clone / "pins.yaml").read_text() == "version: 1\n"
        assert not (clone / "untracked.yaml").exists()
        assert not (clone / "debug.log").exists()
        assert_at_remote_head(clone, upstream)
    assert marker.exists()


def test_locks_left_by_a_killed_git_do_not_block_the_next_use(upstream: Upstream, tmp_path: Path):
    mirror = mirror_of(upstream, tmp_path)
    with mirror.checkout("main"):
        pass
    marker = same_clone_marker(mirror)
    metadata = mirror.directory / ".git"
    for stale in ("index.lock", "HEAD.lock", "refs/remotes/origin/main.lock"):
        (metadata / stale).write_text("")
    upstream.commit("pins.yaml", "version: 2\n")
    with mirror.checkout("main") as clone:
        assert (clone / "pins.yaml").read_text() == "version: 2\n"
        assert_at_remote_head(clone, upstream)
    assert marker.exists(), "stale locks cost a whole new clone"


@pytest.mark.parametrize(
    "poison",
    ["not-a-repository", "another-remote", "corrupt-objects", "unreadable-head", "a-file"],
)
def test_a_mirror_that_cannot_be_trusted_is_rebuilt(
    upstream: Upstream, tmp_path: Path, poison: str
):
    log: list[str] = []
    mirror = mirror_of(upstream, tmp_path, log)
    with mirror.checkout("main"):
        pass
    metadata = mirror.directory / ".git"
    if poison == "not-a-repository":
        subprocess.run(["rm", "-rf", str(metadata)], check=True)
        (mirror.directory / "pins.yaml").write_text("whatever was here\n")
    elif poison == "another-remote":
        elsewhere = Upstream(tmp_path / "elsewhere")
        run_git(mirror.directory, "remote", "set-url", "origin", str(elsewhere.remote))
    elif poison == "corrupt-objects":
        # Every object of the clone truncated, as a disk that filled up mid-write leaves them
        # (each replaced, not written through: a clone of a local path hard-links the remote's).
        for stored in [path for path in (metadata / "objects").rglob("*") if path.is_file()]:
            stored.unlink()
            stored.write_bytes(b"")
    elif poison == "unreadable-head":
        (metadata / "HEAD").write_text("garbage\n")
    else:
        subprocess.run(["rm", "-rf", str(mirror.directory)], check=True)
        mirror.directory.write_text("not a directory\n")
    upstream.commit("pins.yaml", "version: 2\n")
    with mirror.checkout("main") as clone:
        assert (clone / "pins.yaml").read_text() == "version: 2\n"
        assert_at_remote_head(clone, upstream)
    assert any(line.startswith(f"rebuilding the mirror {mirror.directory}") for line in log), log
    # Nothing of the rebuild is left beside the mirror.
    assert sorted(entry.name for entry in mirror.directory.parent.iterdir()) == sorted(
        [mirror.directory.name, mirror.directory.name + ".lock"]
    )


def test_a_remote_that_is_down_costs_the_pass_not_the_mirror(upstream: Upstream, tmp_path: Path):
    mirror = mirror_of(upstream, tmp_path)
    with mirror.checkout("main"):
        pass
    marker = same_clone_marker(mirror)
    away = upstream.remote.with_name("away.git")
    upstream.remote.rename(away)
    with pytest.raises(GitError, match="cannot clone"), mirror.checkout("main"):
        pytest.fail("a checkout was handed out without the remote's head")
    assert marker.exists(), "the mirror was thrown away while the remote was down"
    away.rename(upstream.remote)
    upstream.commit("pins.yaml", "version: 2\n")
    with mirror.checkout("main") as clone:
        assert (clone / "pins.yaml").read_text() == "version: 2\n"
    assert marker.exists()


def test_a_mirror_in_use_by_another_process_is_left_alone(upstream: Upstream, tmp_path: Path):
    log: list[str] = []
    mirror = mirror_of(upstream, tmp_path, log)
    with mirror.checkout("main"):
        pass
    marker = same_clone_marker(mirror)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "lock = open(sys.argv[1], 'a+')\n"
            "fcntl.flock(lock, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
            str(mirror.directory.with_name(mirror.directory.name + ".lock")),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        (mirror.directory / "pins.yaml").write_text("the other process's edit\n")
        with mirror.checkout("main") as clone:
            assert clone != mirror.directory
            assert_at_remote_head(clone, upstream)
    finally:
        holder.kill()
        holder.wait()
    assert (mirror.directory / "pins.yaml").read_text() == "the other process's edit\n"
    assert marker.exists()
    assert any("is in use: working on a fresh clone" in line for line in log), log


def test_a_cache_directory_that_cannot_be_written_falls_back_to_a_clone(
    upstream: Upstream, tmp_path: Path
):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    log: list[str] = []
    remote = git.Remote(str(upstream.remote))
    mirror = Mirror(mirror_directory(blocked / "mirrors", remote), remote, log.append)
    with mirror.checkout("main") as clone:
        assert_at_remote_head(clone, upstream)
    assert any("working on a fresh clone" in line for line in log), log


def test_open_checkout_without_a_directory_is_a_throwaway_clone(upstream: Upstream):
    with open_checkout(git.Remote(str(upstream.remote)), "main", None) as clone:
        assert_at_remote_head(clone, upstream)
    assert not clone.exists()


class StalledFetch:
    """Another process fetching into the mirror, its transfer stalled midway through the pack."""

    def __init__(self, upstream: Upstream, mirror: Mirror, directory: Path) -> None:
        # A commit big enough that its pack is still arriving when the transfer stalls.
        upstream.commit("model-card.bin", os.urandom(2_000_000).hex())
        stalling = StallingUploadPack.install(mirror.directory, directory)
        started, self.stall = stalling.started, stalling.stall
        self.stall.write_text("")
        self.lock_path = mirror.directory.with_name(mirror.directory.name + ".lock")
        self.fetcher = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys\n"
                "from pathlib import Path\n"
                "from mlopsctl.base import git\n"
                "from mlopsctl.base.mirror import Mirror\n"
                "with Mirror(Path(sys.argv[1]), git.Remote(sys.argv[2])).checkout('main'):\n"
                "    pass\n",
                str(mirror.directory),
                str(upstream.remote),
            ],
            env={**os.environ, "PYTHONPATH": f"{REPOSITORY / 'scripts'}"},
            start_new_session=True,
        )
        self.git: list[int] = []
        deadline = time.monotonic() + 30
        while not self.git and time.monotonic() < deadline:
            if started.exists():
                time.sleep(0.5)  # the pack is arriving
                self.git = git_processes_in(mirror.directory)
            time.sleep(0.05)
        if not self.git:
            self.kill_all()
            pytest.fail("no git was fetching into the mirror")

    def kill_all(self) -> None:
        for pid in [self.fetcher.pid, *self.git]:
            kill_group(pid)
        self.fetcher.wait()
        # The kernel frees the lock once the last killed holder has exited, a moment later.
        deadline = time.monotonic() + 10
        with self.lock_path.open("a+") as lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(lock, fcntl.LOCK_UN)
                    return
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def test_a_fetch_killed_midway_leaves_a_mirror_the_next_use_repairs(
    upstream: Upstream, tmp_path: Path
):
    """A process killed while its fetch receives the pack (a pod evicted mid-pass), the git it
    started with it; the next process fetches and gets the remote's head."""
    mirror = mirror_of(upstream, tmp_path)
    with mirror.checkout("main"):
        pass
    stalled = StalledFetch(upstream, mirror, tmp_path)
    stalled.kill_all()
    assert run_git(mirror.directory, "rev-parse", "origin/main").strip() != upstream.head()
    stalled.stall.unlink()
    with mirror.checkout("main") as clone:
        assert clone == mirror.directory
        assert_at_remote_head(clone, upstream)
        assert (clone / "model-card.bin").stat().st_size == 4_000_000


def test_a_git_that_outlives_its_killed_process_keeps_the_mirror_to_itself(
    upstream: Upstream, tmp_path: Path
):
    """Only the process is killed (kill -9 in a terminal): the git it started lives on, still
    writing into the mirror, so the next process must not touch the mirror until it ends."""
    log: list[str] = []
    mirror = mirror_of(upstream, tmp_path, log)
    with mirror.checkout("main"):
        pass
    stalled = StalledFetch(upstream, mirror, tmp_path)
    try:
        os.kill(stalled.fetcher.pid, signal.SIGKILL)
        stalled.fetcher.wait()
        assert all(Path(f"/proc/{pid}").exists() for pid in stalled.git)
        with mirror.checkout("main") as clone:
            assert clone != mirror.directory
            assert_at_remote_head(clone, upstream)
        assert any("is in use: working on a fresh clone" in line for line in log), log
    finally:
        stalled.kill_all()
    stalled.stall.unlink()
    with mirror.checkout("main") as clone:
        assert clone == mirror.directory  # the orphaned git is gone, and with it the lock
        assert_at_remote_head(clone, upstream)


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(pid), signal.SIGKILL)


def test_mirrors_live_where_the_xdg_base_directory_specification_says(tmp_path: Path):
    home = Path.home()
    assert mirrors_directory({}) == home / ".cache" / "mlopsctl" / "mirrors"
    assert mirrors_directory({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "mlopsctl/mirrors"
    # A relative XDG path is invalid and ignored, as the specification says.
    assert mirrors_directory({"XDG_CACHE_HOME": "relative"}) == home / ".cache/mlopsctl/mirrors"
    chosen = {MIRROR_DIRECTORY_VARIABLE: str(tmp_path / "mine"), "XDG_CACHE_HOME": "/elsewhere"}
    assert mirrors_directory(chosen) == tmp_path / "mine"


def test_each_remote_has_its_own_mirror_named_without_its_credentials(tmp_path: Path):
    first = mirror_directory(
        tmp_path, git.Remote("https://user:secret@example.test/a/platform.git")
    )
    second = mirror_directory(tmp_path, git.Remote("https://example.test/b/platform.git"))
    assert first != second
    assert first.parent == second.parent == tmp_path
    assert first.name.startswith("platform.git-")
    assert "secret" not in str(first)


def test_the_mirror_flag_takes_none_a_directory_or_the_default(tmp_path: Path):
    assert checked_mirrors_directory("none") is None
    assert checked_mirrors_directory(str(tmp_path)) == tmp_path
    assert checked_mirrors_directory(None) == mirrors_directory()
    taken = tmp_path / "a-file"
    taken.write_text("")
    with pytest.raises(MlopsctlError, match="is a file, not a directory"):
        checked_mirrors_directory(str(taken))


def test_only_one_process_holds_a_mirror_at_a_time(upstream: Upstream, tmp_path: Path):
    """The lock is the kernel's: released when the holder dies, however it dies."""
    mirror = mirror_of(upstream, tmp_path)
    with mirror.checkout("main"):
        lock_path = mirror.directory.with_name(mirror.directory.name + ".lock")
        with lock_path.open("a+") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with lock_path.open("a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again

"""Checkouts of the remote to plan and land on: a persistent mirror, or a throwaway clone.

A fresh clone per pass costs the whole history every time. The mirror is a full clone kept in
the user's cache directory (or the promoter's), fetched before each use and reset hard to the
remote's head, so what a pass sees never depends on what the previous pass left behind: only
git's object store (content-addressed, so it cannot hold a stale answer) carries over.

A mirror that cannot be trusted (not a repository, another remote, a corrupt object, a ref
git cannot read) is rebuilt from a new clone, made beside it and swapped in only once it is
whole: a remote that is down never costs the mirror it has. One process at a time uses a mirror
(an advisory lock beside it); another process that finds it busy works on a throwaway clone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mlopsctl.base import git
from mlopsctl.base.errors import GitError, GitTimeout, MlopsctlError

MIRROR_DIRECTORY_VARIABLE = "MLOPSCTL_MIRROR_DIR"
# Lock files a git process killed mid-command leaves behind; each blocks the next command.
# Under the mirror's own lock no other git runs there, so they are known to be stale.
_STALE_LOCKS = ("index.lock", "HEAD.lock", "config.lock", "packed-refs.lock", "shallow.lock")


def mirrors_directory(environment: dict[str, str] | None = None) -> Path:
    """Where mirrors live: $MLOPSCTL_MIRROR_DIR, else $XDG_CACHE_HOME/mlopsctl/mirrors, else
    ~/.cache/mlopsctl/mirrors (the XDG base directory specification's default)."""
    variables = os.environ if environment is None else environment
    chosen = variables.get(MIRROR_DIRECTORY_VARIABLE, "").strip()
    if chosen:
        return Path(chosen)
    cache = variables.get("XDG_CACHE_HOME", "").strip()
    # The specification: a relative XDG path is invalid and must be ignored.
    base = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "mlopsctl" / "mirrors"


def mirror_directory(parent: Path, remote: git.Remote) -> Path:
    """The mirror of `remote` under `parent`: its name readable, its key the whole URL."""
    digest = hashlib.sha256(remote.url.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(remote).rstrip("/").rsplit("/", 1)[-1])
    return parent / f"{name.strip('-.')[:40] or 'repository'}-{digest}"


@contextlib.contextmanager
def temporary_clone(remote: git.Remote, branch: str) -> Iterator[Path]:
    """A fresh clone of `branch`, removed on the way out."""
    with tempfile.TemporaryDirectory(prefix="mlopsctl-") as scratch:
        yield remote.clone(branch, Path(scratch) / "repository")


class Mirror:
    """A full clone of one remote at `directory`, kept between uses."""

    def __init__(
        self, directory: Path, remote: git.Remote, log: Callable[[str], None] = print
    ) -> None:
        self.directory = directory
        self.remote = remote
        self.log = log

    @contextlib.contextmanager
    def checkout(self, branch: str) -> Iterator[Path]:
        """The mirror on `branch` as the remote has it now, for this process alone; a
        throwaway clone when another process holds the mirror."""
        try:
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            lock = self._lock_path().open("a+")  # closed by the `with` below
        except OSError as error:
            # A cache directory that cannot be written costs speed, never the command.
            self.log(f"no mirror at {self.directory} ({error.strerror}): working on a fresh clone")
            with temporary_clone(self.remote, branch) as clone:
                yield clone
            return
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log(f"the mirror {self.directory} is in use: working on a fresh clone")
                with temporary_clone(self.remote, branch) as clone:
                    yield clone
                return
            # Every git run on the mirror holds the lock too: one orphaned by a kill keeps the
            # mirror from the next process until it ends (the kernel drops the lock then).
            with git.passing_descriptor(lock.fileno()):
                yield self.synchronised(branch)

    def _lock_path(self) -> Path:
        return self.directory.with_name(self.directory.name + ".lock")

    def synchronised(self, branch: str) -> Path:
        """Fetch, then reset hard to the remote's `branch`; rebuilt when it cannot be trusted.

        Call with the mirror's lock held (`checkout` does)."""
        problem = self._untrusted()
        if problem is None:
            self._remove_stale_locks()
            try:
                self._fetch(branch)
                self._reset(branch)
                return self.directory
            except GitTimeout:
                raise  # the remote is slow, not the mirror: keep it for the next pass
            except GitError as error:
                problem = str(error)
        if self.directory.exists():
            self.log(f"rebuilding the mirror {self.directory}: {problem}")
        self._rebuild(branch)
        return self.directory

    def _untrusted(self) -> str | None:
        """Why the directory is not a mirror of the remote to fetch into, or None."""
        if not (self.directory / ".git").is_dir():
            return "no mirror yet" if not self.directory.exists() else "not a git clone"
        origin = git.git(self.directory, "config", "--get", "remote.origin.url", check=False)
        if origin.returncode != 0 or origin.stdout.strip() != self.remote.url:
            return "its origin is another remote"
        return None

    def _remove_stale_locks(self) -> None:
        metadata = self.directory / ".git"
        for name in _STALE_LOCKS:
            (metadata / name).unlink(missing_ok=True)
        for stale in (metadata / "refs").rglob("*.lock"):
            stale.unlink(missing_ok=True)

    def _fetch(self, branch: str) -> None:
        self.remote.git(
            self.directory,
            "fetch",
            "--quiet",
            "--no-tags",
            "--prune",
            "origin",
            f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
        )

    def _reset(self, branch: str) -> None:
        """The working tree, index and `branch` exactly the fetched head: whatever an earlier
        pass left (edits, an unpushed commit, a pull-request branch checked out) is gone. A
        forced checkout compares every index entry with the tree, so an index that disagrees
        with it is rewritten too; a ref or object git cannot read fails the command."""
        git.git(
            self.directory,
            "checkout",
            "--quiet",
            "--force",
            "-B",
            branch,
            f"refs/remotes/origin/{branch}",
        )
        git.git(self.directory, "clean", "--quiet", "-ffdx")

    def _rebuild(self, branch: str) -> None:
        replacement = Path(
            tempfile.mkdtemp(prefix=f".{self.directory.name}-", dir=self.directory.parent)
        )
        try:
            clone = self.remote.clone(branch, replacement / "repository")
            # Git's automatic housekeeping runs in the foreground, inside the command that
            # started it: a detached one would still hold the locks the next use clears.
            git.git(clone, "config", "gc.autoDetach", "false")
            git.git(clone, "config", "maintenance.autoDetach", "false")
            if self.directory.exists() or self.directory.is_symlink():
                discarded = replacement / "discarded"
                self.directory.rename(discarded)
            clone.rename(self.directory)
        finally:
            shutil.rmtree(replacement, ignore_errors=True)


def open_checkout(
    remote: git.Remote,
    branch: str,
    directory: Path | None,
    log: Callable[[str], None] = print,
) -> contextlib.AbstractContextManager[Path]:
    """The mirror at `directory`, or a throwaway clone when there is none."""
    if directory is None:
        return temporary_clone(remote, branch)
    return Mirror(directory, remote, log).checkout(branch)


def checked_mirrors_directory(value: str | None) -> Path | None:
    """A --mirror-dir value: `none` turns the mirror off; empty means the default place."""
    if value is not None and value.strip().lower() == "none":
        return None
    directory = Path(value) if value else mirrors_directory()
    if directory.exists() and not directory.is_dir():
        raise MlopsctlError(f"--mirror-dir {str(directory)!r} is a file, not a directory")
    return directory

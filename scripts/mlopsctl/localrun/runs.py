"""Which local runs are alive: each holds a lock file named by its id for as long as it lives.

A run takes its lock before it makes anything (a state directory, a namespace, a cgroup, a
table), and the lock dies with its process however it ends. So anything on the machine named
by a run id whose lock nobody holds is a leftover of a run that was killed, and the next run
removes it. The lock is per run, not per address block: a block is reused by the next run,
and a record kept with the block would lose what the run before it left.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path

from mlopsctl.base.errors import LocalRunError

STATE_DIRECTORY = Path("/run/mlopsctl")

# Short enough for the interface names built from it (`ml<id>h<index>`, at most 15 bytes), and
# free of the separators those names and the namespace names use.
RUN_ID = re.compile(r"[a-z0-9]{1,8}")


def _lock_path(run_id: str) -> Path:
    return STATE_DIRECTORY / f"run-{run_id}.lock"


def check_run_id(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id):
        raise LocalRunError(
            f"run id {run_id!r}: lower-case letters and digits only, at most 8 of them"
        )
    return run_id


class RunLock:
    """The lock that says the run `run_id` is alive, held from here until `release`."""

    def __init__(self, run_id: str) -> None:
        self.run_id = check_run_id(run_id)
        STATE_DIRECTORY.mkdir(parents=True, exist_ok=True)
        self._path = _lock_path(run_id)
        while True:
            descriptor = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                raise LocalRunError(f"run id {run_id!r} is taken by a run still going") from None
            # `forget_dead` may have unlinked the file between its open and the lock: a lock on
            # a file no longer at the path would tell nobody that this run is alive.
            if _same_file(descriptor, self._path):
                break
            os.close(descriptor)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        if self._descriptor is None:
            return
        # Unlinked while still held, so no other run sees a free lock file that is going away.
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        os.close(self._descriptor)
        self._descriptor = None


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        at_path = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


def is_live(run_id: str) -> bool:
    """Whether a live run holds the lock of `run_id`. A run with no lock file at all (one killed
    before this record existed) is not."""
    return lock_is_held(_lock_path(run_id))


def lock_is_held(path: Path) -> bool:
    """Whether a live process holds this lock file (a lock dies with its process); asking does
    not take it."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def forget_dead() -> None:
    """Remove the lock files of runs that are gone (after their leftovers were removed)."""
    if not STATE_DIRECTORY.is_dir():
        return
    for path in STATE_DIRECTORY.glob("run-*.lock"):
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        finally:
            os.close(descriptor)

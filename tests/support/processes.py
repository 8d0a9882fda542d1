"""Finding the processes a test's subject started, as a pod's kill would find them all, and
waiting for what they do."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def wait_for(
    condition: Callable[[], Any],
    what: str,
    seconds: float,
    interval: float,
    details: Callable[[], str] | None = None,
) -> Any:
    """`condition()`'s first true value, asked every `interval` s; the test fails after
    `seconds` without one, saying what `details()` finds then."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            found = f": {details()}" if details else ""
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}{found}")
        time.sleep(interval)


def git_processes_in(directory: Path) -> list[int]:
    """Processes of git whose working directory is `directory`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cwd").readlink() == directory and b"git" in (
                entry / "cmdline"
            ).read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@dataclass(frozen=True)
class StallingUploadPack:
    """An upload-pack for a clone's `origin` that, while `stall` exists, lets the advertisement
    and the start of the pack through and then sends nothing more: a fetch stuck midway."""

    started: Path  # made when a stalled transfer has begun
    stall: Path

    @classmethod
    def install(cls, clone: Path, directory: Path) -> StallingUploadPack:
        wrapper = directory / "slow-upload-pack"
        made = cls(directory / "upload-pack-started", directory / "stall")
        wrapper.write_text(
            "#!/bin/sh\n"
            f"if [ -e {made.stall} ]; then touch {made.started}; "
            'git-upload-pack "$@" | (head -c 65536; sleep 600); '
            'else exec git-upload-pack "$@"; fi\n'
        )
        wrapper.chmod(0o755)
        subprocess.run(
            ["git", "config", "remote.origin.uploadpack", str(wrapper)],
            cwd=clone,
            check=True,
            capture_output=True,
        )
        return made


def ended(pid: int) -> bool:
    """Whether a process has ended: gone, or a zombie its (perhaps adoptive) parent has not
    reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")

"""Finding the processes a test's subject started, as a pod's kill would find them all."""

from __future__ import annotations

from pathlib import Path


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

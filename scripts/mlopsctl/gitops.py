"""Git, through the git command: throwaway clones of the remote, commits with trailers, pushes.

Promotion never touches the user's checkout: it works in a fresh clone in a temporary
directory, and the only state it leaves is what a push lands on the remote, atomically.
"""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlopsctl.errors import MlopsctlError


class GitError(MlopsctlError):
    """The git remote could not be read or written; nothing was left half-done."""

    exit_code = 4


# Git must not ask anyone anything, nor read the user's hooks or templates.
_QUIET_ENVIRONMENT = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "/bin/false",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TEMPLATE_DIR": "",
}


# Credentials for the remote, set once by the service (never written to disk or to the URL).
_CREDENTIALS: dict[str, str] = {}


def use_credentials(
    token: str | None = None, ssh_key_file: str | None = None, known_hosts_file: str | None = None
) -> None:
    """Authenticate git to the remote: a token for HTTPS, or an SSH key file."""
    _CREDENTIALS.clear()
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        _CREDENTIALS.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
        )
    if ssh_key_file:
        command = f"ssh -i {shlex.quote(ssh_key_file)} -o IdentitiesOnly=yes -o BatchMode=yes"
        if known_hosts_file:
            known_hosts = shlex.quote(known_hosts_file)
            command += f" -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
        _CREDENTIALS["GIT_SSH_COMMAND"] = command


def _environment() -> dict[str, str]:
    return {**os.environ, **_QUIET_ENVIRONMENT, **_CREDENTIALS}


def git_at(*arguments: str, timeout_seconds: float) -> subprocess.CompletedProcess[str]:
    """git run outside any repository (ls-remote), bounded in time."""
    return subprocess.run(
        ["git", *arguments],
        capture_output=True,
        text=True,
        env=_environment(),
        check=False,
        timeout=timeout_seconds,
    )


def git(directory: Path, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    environment = _environment()
    completed = subprocess.run(
        ["git", *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if check and completed.returncode != 0:
        reason = completed.stderr.strip() or completed.stdout.strip()
        raise GitError(f"git {' '.join(arguments[:2])} failed: {reason}")
    return completed


@dataclass(frozen=True)
class Author:
    name: str
    email: str


def clone(remote: str, branch: str, destination: Path) -> Path:
    """A full clone (history is read for rollbacks) of `branch` into `destination`."""
    completed = git(
        destination.parent,
        "clone",
        "--quiet",
        "--no-tags",
        "--branch",
        branch,
        remote,
        str(destination),
        check=False,
    )
    if completed.returncode != 0:
        raise GitError(f"cannot clone {remote} (branch {branch}): {completed.stderr.strip()}")
    return destination


def head(directory: Path) -> str:
    return git(directory, "rev-parse", "HEAD").stdout.strip()


def reset_to_remote(directory: Path, branch: str) -> None:
    git(directory, "fetch", "--quiet", "origin", branch)
    git(directory, "reset", "--quiet", "--hard", f"origin/{branch}")
    git(directory, "clean", "--quiet", "-fd")


def commit(
    directory: Path,
    paths: Sequence[str],
    subject: str,
    body: str,
    trailers: Sequence[tuple[str, str]],
    author: Author,
) -> str:
    git(directory, "add", "--", *paths)
    arguments = [
        "-c",
        f"user.name={author.name}",
        "-c",
        f"user.email={author.email}",
        "commit",
        "--quiet",
        "--no-verify",
        "-m",
        subject,
    ]
    if body:
        arguments += ["-m", body]
    for key, value in trailers:
        arguments += ["--trailer", f"{key}: {value}"]
    git(directory, *arguments)
    return head(directory)


def push(directory: Path, refspec: str, force_with_lease: str | None = None) -> bool:
    """True when the push landed; False when the remote moved on (rejected as non-fast-forward)."""
    arguments = ["push", "--quiet", "--porcelain", "origin", refspec]
    if force_with_lease is not None:
        arguments.insert(1, f"--force-with-lease={force_with_lease}")
    completed = git(directory, *arguments, check=False)
    if completed.returncode == 0:
        return True
    output = completed.stdout + completed.stderr
    if any(
        word in output
        for word in (
            "non-fast-forward",
            "fetch first",
            "[rejected]",
            "stale info",
            "cannot lock ref",
        )
    ):
        return False
    raise GitError(f"git push {refspec} failed: {output.strip()}")


def file_at(directory: Path, revision: str, path: str) -> str | None:
    completed = git(directory, "show", f"{revision}:{path}", check=False)
    return completed.stdout if completed.returncode == 0 else None


def log_of(directory: Path, path: str, limit: int = 200) -> list[str]:
    """Commits that changed `path`, newest first."""
    return git(directory, "log", f"-{limit}", "--format=%H", "--", path).stdout.split()


def resolve_revision(directory: Path, revision: str) -> str:
    """The commit `revision` names, or an error that says which revision is unknown."""
    if revision.startswith("-"):
        raise MlopsctlError(f"revision {revision!r} is not a revision (it starts with '-')")
    if git(directory, "rev-parse", "--git-dir", check=False).returncode != 0:
        raise MlopsctlError(f"{directory} is not inside a git repository")
    commit = commit_of(directory, revision)
    if commit is None:
        raise MlopsctlError(f"revision {revision!r} does not name a commit in {directory}")
    return commit


def commit_of(directory: Path, revision: str) -> str | None:
    completed = git(
        directory, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", check=False
    )
    return completed.stdout.strip() if completed.returncode == 0 else None


def merge_base(directory: Path, first: str, second: str) -> str:
    """Where `second` forked from `first` (as a pull request diff is taken), else `first`."""
    completed = git(directory, "merge-base", first, second, check=False)
    return completed.stdout.strip() if completed.returncode == 0 else first


def changed_files(directory: Path, base: str, head: str | None) -> list[str]:
    """Files that differ between `base` and `head`; with no head, the working tree as it is
    (uncommitted edits and files git does not track yet, except ignored ones)."""
    # --relative: paths from `directory`, which may be a folder inside the git repository.
    listing = ("diff", "--name-only", "--no-renames", "--relative", "-z", base)
    if head is not None:
        listed = git(directory, *listing, head).stdout
        return sorted(set(filter(None, listed.split("\0"))))
    tracked = git(directory, *listing).stdout
    untracked = git(directory, "ls-files", "--others", "--exclude-standard", "-z").stdout
    return sorted(set(filter(None, (tracked + untracked).split("\0"))))


@contextmanager
def worktree(directory: Path, revision: str, destination: Path) -> Iterator[Path]:
    """A detached checkout of `revision` at `destination`, removed again on the way out.

    Yields the folder that corresponds to `directory` in it (the platform may be a folder of a
    larger repository)."""
    prefix = git(directory, "rev-parse", "--show-prefix").stdout.strip()
    git(directory, "worktree", "add", "--quiet", "--detach", str(destination), revision)
    try:
        yield destination / prefix
    finally:
        git(directory, "worktree", "remove", "--force", str(destination), check=False)
        git(directory, "worktree", "prune", check=False)

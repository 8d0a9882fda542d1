"""Git, through the git command: throwaway clones of the remote, commits with trailers, pushes.

Promotion never touches the user's checkout: it works in a fresh clone in a temporary
directory, and the only state it leaves is what a push lands on the remote, atomically.

Every git command is bounded in time. A remote that accepts the connection and then says
nothing would otherwise hold the promoter's worker (and its shutdown) forever: the transport
limits below make a stalled transfer fail on its own, and a deadline on the whole command
stops git, with the helpers it started (git-remote-https, ssh), when they do not.
"""

from __future__ import annotations

import base64
import math
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from mlopsctl.base import timings
from mlopsctl.base.errors import GitError, GitTimeout, MlopsctlError

# Whole-command deadlines. Network commands wait on someone else; local ones only on this
# machine's disk, so theirs is a generous backstop against a stuck hook or lock, not a budget.
NETWORK_TIMEOUT_SECONDS = 120.0
LOCAL_TIMEOUT_SECONDS = 300.0
TIMEOUT_VARIABLE = "MLOPSCTL_GIT_TIMEOUT_SECONDS"
NETWORK_COMMANDS = frozenset({"clone", "fetch", "pull", "push", "ls-remote"})
# Time git gets to remove its lock files on SIGTERM before the group is killed outright.
TERMINATE_GRACE_SECONDS = 2.0

# Transport limits: a transfer slower than this for this long fails (curl's low-speed check,
# which also covers a server that never answers); ssh gives up on a silent server or link.
LOW_SPEED_LIMIT_BYTES_PER_SECOND = 1000
LOW_SPEED_TIME_SECONDS = 30
SSH_CONNECT_TIMEOUT_SECONDS = 30
SSH_SERVER_ALIVE_INTERVAL_SECONDS = 15
SSH_SERVER_ALIVE_COUNT_MAX = 4


# Git must not ask anyone anything, nor read the user's hooks or templates.
_QUIET_ENVIRONMENT = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "/bin/false",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TEMPLATE_DIR": "",
}


@dataclass(frozen=True)
class Credentials:
    """How git authenticates to a remote: a token for HTTPS (sent as a header, never put in the
    URL or on disk), or an SSH key file. Carried by the `Remote` that uses it, never module
    state, so two remotes in one process cannot borrow each other's; never printed."""

    token: str | None = field(default=None, repr=False)
    ssh_key_file: str | None = None
    known_hosts_file: str | None = None

    def settings(self) -> list[tuple[str, str]]:
        """The git settings that carry the token."""
        if not self.token:
            return []
        basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
        return [("http.extraHeader", f"Authorization: Basic {basic}")]

    def ssh_command(self) -> str | None:
        """The SSH command that uses the key file, with the keepalive limits."""
        if not self.ssh_key_file:
            return None
        command = f"ssh -i {shlex.quote(self.ssh_key_file)} -o IdentitiesOnly=yes -o BatchMode=yes"
        if self.known_hosts_file:
            known_hosts = shlex.quote(self.known_hosts_file)
            command += f" -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
        return f"{command} {_ssh_options()}"


NO_CREDENTIALS = Credentials()


def credentials_from_environment() -> Credentials:
    """$MLOPSCTL_GIT_TOKEN and $MLOPSCTL_SSH_KEY_FILE: the credentials the command line takes,
    the same the service takes by default (workflows pass their token this way)."""
    return Credentials(
        os.environ.get("MLOPSCTL_GIT_TOKEN") or None,
        os.environ.get("MLOPSCTL_SSH_KEY_FILE") or None,
    )


def _ssh_options() -> str:
    return (
        f"-o ConnectTimeout={SSH_CONNECT_TIMEOUT_SECONDS}"
        f" -o ServerAliveInterval={SSH_SERVER_ALIVE_INTERVAL_SECONDS}"
        f" -o ServerAliveCountMax={SSH_SERVER_ALIVE_COUNT_MAX}"
    )


def _transport_settings() -> list[tuple[str, str]]:
    return [
        ("http.lowSpeedLimit", str(LOW_SPEED_LIMIT_BYTES_PER_SECOND)),
        ("http.lowSpeedTime", str(LOW_SPEED_TIME_SECONDS)),
    ]


def _inherited_settings(environment: Mapping[str, str]) -> list[tuple[str, str]]:
    """The git settings the caller's environment passes as GIT_CONFIG_COUNT/KEY_n/VALUE_n."""
    count_text = environment.get("GIT_CONFIG_COUNT", "").strip()
    if not count_text:
        return []
    if not count_text.isdigit():
        raise MlopsctlError(f"GIT_CONFIG_COUNT={count_text!r} is not a count of git settings")
    settings = []
    for index in range(int(count_text)):
        key = environment.get(f"GIT_CONFIG_KEY_{index}")
        if not key:
            raise MlopsctlError(
                f"GIT_CONFIG_COUNT is {count_text} but GIT_CONFIG_KEY_{index} is not set"
            )
        settings.append((key, environment.get(f"GIT_CONFIG_VALUE_{index}", "")))
    return settings


def _environment(
    directory: Path | None = None,
    network: bool = True,
    credentials: Credentials = NO_CREDENTIALS,
) -> dict[str, str]:
    """What git runs with: quiet, bounded, authenticated.

    Git settings go in one GIT_CONFIG_* list, in increasing precedence: the transport limits,
    then those of the caller's environment (an operator's own limits win), then credentials."""
    environment = {**os.environ, **_QUIET_ENVIRONMENT}
    settings = [
        *_transport_settings(),
        *_inherited_settings(environment),
        *credentials.settings(),
    ]
    environment["GIT_CONFIG_COUNT"] = str(len(settings))
    for index, (key, value) in enumerate(settings):
        environment[f"GIT_CONFIG_KEY_{index}"] = key
        environment[f"GIT_CONFIG_VALUE_{index}"] = value
    keyed = credentials.ssh_command()
    if keyed is not None:
        environment["GIT_SSH_COMMAND"] = keyed
    elif network and not _ssh_chosen_elsewhere(environment, directory):
        environment["GIT_SSH_COMMAND"] = f"ssh {_ssh_options()}"
    return environment


def _ssh_chosen_elsewhere(environment: Mapping[str, str], directory: Path | None) -> bool:
    """Whether the operator picked the SSH command (GIT_SSH_COMMAND, GIT_SSH, core.sshCommand):
    theirs is used as it is, since options appended to a wrapper script could break it; the
    command's deadline still bounds it."""
    if environment.get("GIT_SSH_COMMAND") or environment.get("GIT_SSH"):
        return True
    configured = subprocess.run(
        ["git", "config", "--get", "core.sshCommand"],
        cwd=directory,
        capture_output=True,
        text=True,
        env=dict(environment),
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=LOCAL_TIMEOUT_SECONDS,
    )
    return bool(configured.stdout.strip())


def network_timeout_seconds() -> float:
    """The deadline of network commands: MLOPSCTL_GIT_TIMEOUT_SECONDS when set, else 120 s."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return NETWORK_TIMEOUT_SECONDS
    return _checked_seconds(text, TIMEOUT_VARIABLE)


def _checked_seconds(value: float | str, name: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise MlopsctlError(
            f"{name}={value!r} is not a git timeout: give a positive number of seconds"
        )
    return seconds


def _subcommand(arguments: Sequence[str]) -> tuple[str, list[str]]:
    """git's subcommand and its positional arguments (options and their values left out)."""
    # Options of the commands mlopsctl runs that take their value as the next argument.
    valued = {"-c", "-C", "-b", "--branch", "--depth", "-o", "--origin", "--upload-pack"}
    subcommand = ""
    positional: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in valued:
            skip = True
        elif argument.startswith("-"):
            continue
        elif not subcommand:
            subcommand = argument
        else:
            positional.append(argument)
    return subcommand, positional


def redacted(text: str) -> str:
    """`text` with the user and password of any http(s) URL in it replaced by ***."""
    return re.sub(r"\b(https?)://[^/@\s]+@", r"\1://***@", text)


def _remote_named(directory: Path | None, subcommand: str, positional: Sequence[str]) -> str:
    """The remote a network command talks to, for a message: its URL, credentials removed."""
    if not positional:
        return "its default remote"
    remote = positional[0]
    if directory is not None and subcommand != "clone" and re.fullmatch(r"[\w.-]+", remote):
        # A remote's name (origin): its URL says which host went silent.
        url = subprocess.run(
            ["git", "remote", "get-url", remote],
            cwd=directory,
            capture_output=True,
            text=True,
            env={**os.environ, **_QUIET_ENVIRONMENT},
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=LOCAL_TIMEOUT_SECONDS,
        ).stdout.strip()
        if url:
            return f"{remote} ({redacted(url)})"
    return redacted(remote)


def _stop_group(process: subprocess.Popen[str]) -> None:
    """End git and every process it started (they share its process group), then reap git.

    SIGTERM first: git removes its lock files on it, so the clone stays usable; SIGKILL for
    whatever is left after the grace period."""
    for signal_number, grace_seconds in (
        (signal.SIGTERM, TERMINATE_GRACE_SECONDS),
        (signal.SIGKILL, TERMINATE_GRACE_SECONDS),
    ):
        try:
            os.killpg(process.pid, signal_number)
        except ProcessLookupError:
            break  # the whole group is gone already
        try:
            # Reads the pipes to their end: done once no process of the group holds them.
            process.communicate(timeout=grace_seconds)
            return
        except subprocess.TimeoutExpired:
            continue
    # Something that left the group holds the pipes: stop reading them; git itself is dead.
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    process.kill()
    process.wait()


# File descriptors every git started in this context inherits: a lock held on a mirror stays
# held by a git that outlives the process that started it (killed, its git orphaned), until
# that git ends too.
_inherited_descriptors: ContextVar[tuple[int, ...]] = ContextVar(
    "mlopsctl_git_inherited_descriptors", default=()
)


@contextmanager
def passing_descriptor(descriptor: int) -> Iterator[None]:
    """Every git run in this block inherits `descriptor` (a lock file's)."""
    token = _inherited_descriptors.set((*_inherited_descriptors.get(), descriptor))
    try:
        yield
    finally:
        _inherited_descriptors.reset(token)


def _run(
    arguments: Sequence[str],
    directory: Path | None,
    timeout_seconds: float | None,
    credentials: Credentials = NO_CREDENTIALS,
) -> subprocess.CompletedProcess[str]:
    subcommand, positional = _subcommand(arguments)
    network = subcommand in NETWORK_COMMANDS
    if timeout_seconds is not None:
        seconds = _checked_seconds(timeout_seconds, "timeout_seconds")
    else:
        seconds = network_timeout_seconds() if network else LOCAL_TIMEOUT_SECONDS
    command = ["git", *arguments]
    # Push apart: it is the one step every promotion must pay; the other network commands
    # (fetch, clone, ls-remote) are what a mirror saves.
    name = "push" if subcommand == "push" else "git fetch" if network else "git"
    with timings.phase(name):
        return _run_bounded(
            command,
            directory,
            seconds,
            credentials,
            (subcommand, positional),
            default_deadline=timeout_seconds is None,
        )


def _run_bounded(
    command: list[str],
    directory: Path | None,
    seconds: float,
    credentials: Credentials,
    parsed: tuple[str, list[str]],
    default_deadline: bool,
) -> subprocess.CompletedProcess[str]:
    subcommand, positional = parsed
    network = subcommand in NETWORK_COMMANDS
    process = subprocess.Popen(
        command,
        cwd=directory,
        env=_environment(directory, network, credentials),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own process group, so that a timeout ends git-remote-https and ssh with it.
        start_new_session=True,
        pass_fds=_inherited_descriptors.get(),
    )
    try:
        stdout, stderr = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        _stop_group(process)
        what = f"git {subcommand}"
        if network:
            what += f" with {_remote_named(directory, subcommand, positional)}"
        message = f"{what} timed out after {seconds:g} s and was stopped"
        if subcommand == "push":
            message += "; whether the remote took the push is not known until it is read again"
        if network and default_deadline:
            message += f" ({TIMEOUT_VARIABLE} sets the deadline of network commands)"
        raise GitTimeout(message, f"git {subcommand}", seconds) from None
    except BaseException:
        # Interrupted (KeyboardInterrupt, a signal turned exception): leave no git behind.
        _stop_group(process)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def git_at(
    *arguments: str,
    timeout_seconds: float | None = None,
    credentials: Credentials = NO_CREDENTIALS,
) -> subprocess.CompletedProcess[str]:
    """git run outside any repository (ls-remote), bounded in time (GitTimeout past it)."""
    return _run(arguments, None, timeout_seconds, credentials)


def git(
    directory: Path,
    *arguments: str,
    check: bool = True,
    timeout_seconds: float | None = None,
    credentials: Credentials = NO_CREDENTIALS,
) -> subprocess.CompletedProcess[str]:
    """git run in `directory`; network commands are bounded by the network deadline, local
    ones by a generous one, unless `timeout_seconds` says otherwise (GitTimeout past it)."""
    completed = _run(arguments, directory, timeout_seconds, credentials)
    if check and completed.returncode != 0:
        reason = completed.stderr.strip() or completed.stdout.strip()
        raise GitError(f"git {' '.join(arguments[:2])} failed: {reason}")
    return completed


@dataclass(frozen=True)
class Author:
    name: str
    email: str


def clone(
    remote: str,
    branch: str,
    destination: Path,
    *,
    timeout_seconds: float | None = None,
    credentials: Credentials = NO_CREDENTIALS,
) -> Path:
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
        timeout_seconds=timeout_seconds,
        credentials=credentials,
    )
    if completed.returncode != 0:
        raise GitError(
            f"cannot clone {redacted(remote)} (branch {branch}): {completed.stderr.strip()}"
        )
    return destination


def head(directory: Path) -> str:
    return git(directory, "rev-parse", "HEAD").stdout.strip()


def reset_to_remote(
    directory: Path,
    branch: str,
    *,
    timeout_seconds: float | None = None,
    credentials: Credentials = NO_CREDENTIALS,
) -> None:
    git(
        directory,
        "fetch",
        "--quiet",
        "origin",
        branch,
        timeout_seconds=timeout_seconds,
        credentials=credentials,
    )
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


def push(
    directory: Path,
    refspec: str,
    force_with_lease: str | None = None,
    *,
    timeout_seconds: float | None = None,
    credentials: Credentials = NO_CREDENTIALS,
) -> bool:
    """True when the push landed; False when the remote moved on (rejected as non-fast-forward).

    GitTimeout when the remote does not answer in time."""
    arguments = ["push", "--quiet", "--porcelain", "origin", refspec]
    if force_with_lease is not None:
        arguments.insert(1, f"--force-with-lease={force_with_lease}")
    completed = git(
        directory, *arguments, check=False, timeout_seconds=timeout_seconds, credentials=credentials
    )
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


@dataclass(frozen=True)
class Remote:
    """A git remote and the credentials that reach it. Every command that talks to it, in a
    clone whose `origin` it is, goes through here with those credentials."""

    url: str
    credentials: Credentials = field(default=NO_CREDENTIALS, repr=False)

    def __repr__(self) -> str:
        # The URL's own user and password, if someone put them there, are not shown either.
        return f"Remote({redacted(self.url)!r})"

    def __str__(self) -> str:
        return redacted(self.url)

    def clone(self, branch: str, destination: Path) -> Path:
        return clone(self.url, branch, destination, credentials=self.credentials)

    def git(
        self, clone_directory: Path, *arguments: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """git in a clone of this remote, with its credentials (fetch, ls-remote origin)."""
        return git(clone_directory, *arguments, check=check, credentials=self.credentials)

    def reset(self, clone_directory: Path, branch: str) -> None:
        """The clone back on the remote's `branch`, as it is now."""
        reset_to_remote(clone_directory, branch, credentials=self.credentials)

    def push(
        self, clone_directory: Path, refspec: str, force_with_lease: str | None = None
    ) -> bool:
        return push(clone_directory, refspec, force_with_lease, credentials=self.credentials)


def file_at(directory: Path, revision: str, path: str) -> str | None:
    completed = git(directory, "show", f"{revision}:{path}", check=False)
    return completed.stdout if completed.returncode == 0 else None


def log_of(directory: Path, path: str, limit: int = 200) -> list[str]:
    """Commits that changed `path`, newest first."""
    return git(directory, "log", f"-{limit}", "--format=%H", "--", path).stdout.split()


def last_commit_touching(directory: Path, revision: str, paths: Sequence[str]) -> str | None:
    """The newest commit reachable from `revision` that changed one of `paths`."""
    completed = git(directory, "log", "-1", "--format=%H", revision, "--", *paths, check=False)
    return completed.stdout.strip() or None if completed.returncode == 0 else None


def last_commits_touching(
    directory: Path, revision: str, paths: Sequence[str]
) -> dict[str, tuple[int, str]]:
    """For each of `paths` (relative to `directory`), the newest commit reachable from `revision`
    that changed it, with its place in the log (0 = newest), from one `git log`.

    A merge that git's history simplification keeps (it differs from every parent on the paths,
    e.g. a conflict resolved by hand) counts with what it brought to the branch: its diff against
    the first parent. Paths the log does not list are left out."""
    if not paths:
        return {}
    completed = git(
        directory,
        "log",
        "--relative",
        "--name-only",
        "--diff-merges=first-parent",
        "--format=%x00%H",
        revision,
        "--",
        *paths,
        check=False,
    )
    if completed.returncode != 0:
        return {}
    wanted = set(paths)
    found: dict[str, tuple[int, str]] = {}
    place, commit = -1, ""
    for line in completed.stdout.splitlines():
        if line.startswith("\0"):
            place, commit = place + 1, line[1:]
        elif line in wanted and line not in found:
            found[line] = (place, commit)
    return found


def contains(directory: Path, commit: str, revision: str) -> bool | None:
    """Whether `revision` has `commit` in its history; None when git does not know either."""
    completed = git(directory, "merge-base", "--is-ancestor", commit, revision, check=False)
    return {0: True, 1: False}.get(completed.returncode)


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

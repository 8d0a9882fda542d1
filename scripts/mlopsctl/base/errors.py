"""Errors that end a command with a clear message instead of a traceback.

Every error mlopsctl raises is defined here, with the exit code `cli.main` returns for it:

    error                 exit  what it says
    MlopsctlError         2     a problem the user can act on (usage, configuration, a file)
    ToolchainError        2     a pinned tool is missing or at another version
    PinError              2     a marker or an edit that cannot be carried out
    KubeApiError          2     the Kubernetes API refused, or could not be reached
    BranchMismatch        2     the served branch's mlopsctl.yaml promotes to another branch
    UnknownEnvironment    2     the promoter is told to own an environment the branch lacks
    LocalRunError         2     the local run cannot start or go on
    UnsupportedManifest   2     a manifest asks for what the local run cannot honour
    RegistryError         3     MLflow answered something unusable, or could not be reached
    GitError              4     the git remote could not be read or written
    GitTimeout            4     a git command ran past its deadline
    GitHubError           4     GitHub refused a pull request call, or could not be reached

Exit code 1 is no error: it is a command's own answer (findings, refusals, a rendered diff).
"""

from __future__ import annotations

import subprocess


class MlopsctlError(Exception):
    """A problem the user can act on; the message names what is wrong and where."""

    exit_code = 2


class ToolchainError(MlopsctlError):
    pass


class PinError(MlopsctlError):
    """A marker or an edit that cannot be carried out; the file is left as it was."""


class KubeApiError(MlopsctlError):
    pass


class BranchMismatch(MlopsctlError):
    """The reconciled branch's mlopsctl.yaml promotes to another branch."""


class UnknownEnvironment(MlopsctlError):
    """The promoter is told to own an environment the branch's mlopsctl.yaml does not have."""


class LocalRunError(MlopsctlError):
    """The local run cannot start or go on; the message says what and where."""


class UnsupportedManifest(LocalRunError):
    """A manifest asks for something the local run cannot honour.

    Never skipped silently: a field the run ignored could be the one that breaks the cluster.
    """

    def __init__(self, resource: object, field: str, problem: str) -> None:
        self.resource = str(resource)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.resource}: {field}: {problem}")


class RegistryError(MlopsctlError):
    """The registry answered something unusable, or could not be reached."""

    exit_code = 3


class GitError(MlopsctlError):
    """The git remote could not be read or written; nothing was left half-done."""

    exit_code = 4


class GitTimeout(GitError, subprocess.TimeoutExpired):
    """A git command ran past its deadline and was stopped, with every process it started.

    Also a `subprocess.TimeoutExpired`: `git_at` used to let that one through, and callers
    written for it (the service's readiness check) keep working unchanged."""

    def __init__(self, message: str, command: str, seconds: float) -> None:
        GitError.__init__(self, message, command, seconds)
        subprocess.TimeoutExpired.__init__(self, command, seconds)
        self.message = message

    def __str__(self) -> str:
        # TimeoutExpired's own text would print the command line, which may carry a URL.
        return self.message


class GitHubError(MlopsctlError):
    exit_code = 4

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status GitHub answered with, when it answered

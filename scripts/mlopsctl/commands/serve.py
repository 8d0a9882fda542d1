"""`mlopsctl serve`: the promoter service. Every setting is a flag or an environment variable.

SIGTERM (and Ctrl-C) stop it after the pass in flight; a restarted service resumes with a full
pass, and two replicas at once are safe (pushes replay on a moving branch; passes are idempotent).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from mlopsctl.base import git, mirror, toolchain
from mlopsctl.base.errors import BranchMismatch, MlopsctlError, UnknownEnvironment
from mlopsctl.base.kubeapi import IN_CLUSTER, KubeApi, in_cluster_kubeconfig
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.commands._arguments import positive_integer, positive_seconds
from mlopsctl.service import Service, Settings, branch_config, pass_allowance_seconds

# How often the main thread wakes to run the handler of a signal another thread received.
SIGNAL_CHECK_SECONDS = 0.5


def _from_environment(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="run the promoter: webhooks + periodic reconcile")
    parser.add_argument(
        "--listen",
        default=_from_environment("MLOPSCTL_LISTEN", "0.0.0.0:8080"),
        help="HOST:PORT to listen on ($MLOPSCTL_LISTEN, default 0.0.0.0:8080)",
    )
    parser.add_argument(
        "--remote",
        default=_from_environment("MLOPSCTL_REMOTE"),
        help="git remote of the platform repository ($MLOPSCTL_REMOTE)",
    )
    parser.add_argument(
        "--branch",
        default=_from_environment("MLOPSCTL_BRANCH", "main"),
        help="branch to reconcile and push to; its mlopsctl.yaml must name it as "
        "promotion.branch ($MLOPSCTL_BRANCH, default main)",
    )
    parser.add_argument(
        "--environments",
        default=_from_environment("MLOPSCTL_ENVIRONMENTS"),
        help="comma-separated environments whose pins this promoter writes, each one of "
        "mlopsctl.yaml's environments; required: one writer per pin ($MLOPSCTL_ENVIRONMENTS)",
    )
    parser.add_argument(
        "--mlflow-uri",
        default=_from_environment("MLFLOW_TRACKING_URI"),
        help="MLflow tracking server ($MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--interval",
        type=positive_seconds,
        # A string: argparse converts it (and says what is wrong with it) only for `serve`.
        default=_from_environment("MLOPSCTL_RECONCILE_INTERVAL", "60"),
        help="seconds between full reconciles, jittered ($MLOPSCTL_RECONCILE_INTERVAL)",
    )
    parser.add_argument(
        "--webhook-secret-env",
        default="MLOPSCTL_WEBHOOK_SECRET",
        help="environment variable holding the webhook secret",
    )
    parser.add_argument(
        "--git-token-env",
        default="MLOPSCTL_GIT_TOKEN",
        help="environment variable holding an HTTPS token for the remote",
    )
    parser.add_argument(
        "--ssh-key-file",
        default=_from_environment("MLOPSCTL_SSH_KEY_FILE"),
        help="SSH private key for the remote ($MLOPSCTL_SSH_KEY_FILE)",
    )
    parser.add_argument(
        "--known-hosts-file",
        default=_from_environment("MLOPSCTL_KNOWN_HOSTS_FILE"),
        help="known_hosts for the SSH remote ($MLOPSCTL_KNOWN_HOSTS_FILE)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=_from_environment("MLOPSCTL_KUBECONFIG"),
        help="the cluster that runs the environments: a kubeconfig, or `in-cluster` for the "
        "pod's service account; each pass then tags the model versions that run there with "
        "deployed.<env> ($MLOPSCTL_KUBECONFIG; default: no tags)",
    )
    parser.add_argument(
        "--mirror-dir",
        default=_from_environment(mirror.MIRROR_DIRECTORY_VARIABLE),
        help="where the mirror of the remote is kept between passes and restarts, fetched and "
        "reset to the branch's head at each pass; `none` for a temporary one "
        "($MLOPSCTL_MIRROR_DIR, default $XDG_CACHE_HOME/mlopsctl/mirrors)",
    )
    parser.add_argument("--max-attempts", type=positive_integer, default=20)


def _listen_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise MlopsctlError(f"--listen {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _environments(text: str | None) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in (text or "").split(",") if name.strip()))
    if not names:
        raise MlopsctlError(
            "no environments: pass --environments or set MLOPSCTL_ENVIRONMENTS to the "
            "comma-separated environments this promoter writes (e.g. local); each environment's "
            "pins have exactly one writer"
        )
    return names


def _stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    # Checked first: a mistake in the flags stops the start before the remote is read or
    # anything is made.
    listen = _listen_address(args.listen)
    if not args.remote:
        raise MlopsctlError("no git remote: pass --remote or set MLOPSCTL_REMOTE")
    environments = _environments(args.environments)
    if not args.mlflow_uri:
        raise MlopsctlError("no MLflow server: pass --mlflow-uri or set MLFLOW_TRACKING_URI")
    secret = os.environ.get(args.webhook_secret_env, "")
    if len(secret) < 16:
        raise MlopsctlError(
            f"${args.webhook_secret_env} must hold the webhook secret (16 characters or more)"
        )
    credentials = git.Credentials(
        os.environ.get(args.git_token_env) or None, args.ssh_key_file, args.known_hosts_file
    )
    # A bad MLOPSCTL_GIT_TIMEOUT_SECONDS stops the start, not every pass after it.
    git_timeout_seconds = git.network_timeout_seconds()
    mirrors = mirror.checked_mirrors_directory(args.mirror_dir)
    # Each pass reads the branch's mlopsctl.yaml again and checks both rules on it; this first
    # check stops the start on a mistake in the flags.
    try:
        branch_config(args.remote, args.branch, environments, credentials)
    except (BranchMismatch, UnknownEnvironment):
        raise  # bad input: refused before any pass clones or pushes
    except MlopsctlError as error:
        # A remote that is down, or a config that does not load, may be fixed while the service
        # runs; every pass checks again and refuses until it is.
        _stderr_log(f"cannot check {args.branch!r} against promotion.branch yet: {error}")
    # Removed however the start ends (a kubeconfig or a port it cannot use included).
    with tempfile.TemporaryDirectory(prefix="mlopsctl-serve-") as scratch:
        settings = Settings(
            remote=args.remote,
            branch=args.branch,
            registry=MlflowRegistry(args.mlflow_uri),
            toolchain=toolchain.resolve(toolchain.default_tools_dir(None)),
            webhook_secret=secret,
            credentials=credentials,
            environments=environments,
            interval_seconds=args.interval,
            max_attempts=args.max_attempts,
            log=_stderr_log,
            pass_timeout_seconds=pass_allowance_seconds(git_timeout_seconds),
            kubeconfig=_kubeconfig(args.kubeconfig, Path(scratch)),
            mirrors=mirrors,
        )
        service = Service(settings, listen)
        stop_requested = threading.Event()

        def request_stop(signal_number: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signal_number).name
            settings.log(f"received {name}: finishing the pass in flight")
            stop_requested.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        service.start()
        # Never an untimed wait: the kernel may deliver the signal to any thread, and Python
        # runs its handler only when the main thread next runs bytecode; blocked for good in a
        # lock, the main thread would never notice, and the pod would be killed mid-pass at the
        # grace period.
        while not stop_requested.wait(SIGNAL_CHECK_SECONDS):
            pass
        service.stop()
    return 0


def _kubeconfig(value: str | None, scratch: Path) -> Path | None:
    """The kubeconfig to read the cluster with; checked now, so a typo stops the start."""
    if not value:
        return None
    if value == IN_CLUSTER:
        kubeconfig = in_cluster_kubeconfig(scratch / "kubeconfig", os.environ)
    else:
        kubeconfig = Path(value)
    KubeApi(kubeconfig).close()  # reads it: a missing file or context is said at once
    return kubeconfig

"""Flags several subcommands share, and what they build from them: the registry, the landing."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from mlopsctl.base import git, mirror
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.github import pull_requests_from_environment
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.commands._workspace import Workspace
from mlopsctl.promote.flows import Landing
from mlopsctl.validate.engine import edit_findings


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mlflow-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="the MLflow tracking server (default: $MLFLOW_TRACKING_URI)",
    )


def registry(args: argparse.Namespace) -> MlflowRegistry:
    if not args.mlflow_uri:
        raise MlopsctlError("no MLflow server: pass --mlflow-uri or set MLFLOW_TRACKING_URI")
    return MlflowRegistry(args.mlflow_uri)


def add_landing_arguments(parser: argparse.ArgumentParser, dry_run: bool = True) -> None:
    parser.add_argument(
        "--remote", help="the git remote to clone and push (default: from mlopsctl.yaml)"
    )
    parser.add_argument(
        "--max-attempts",
        type=positive_integer,
        default=20,
        help="pushes to try when the branch keeps moving (default: 20)",
    )
    parser.add_argument(
        "--mirror-dir",
        default=os.environ.get(mirror.MIRROR_DIRECTORY_VARIABLE),
        help="where the mirrors of remotes are kept between runs, each fetched and reset to the "
        "remote's head before use; `none` for a throwaway clone each run "
        "($MLOPSCTL_MIRROR_DIR, default $XDG_CACHE_HOME/mlopsctl/mirrors)",
    )
    if dry_run:
        parser.add_argument(
            "--dry-run", action="store_true", help="print the plan and the diff only"
        )


def positive_integer(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def positive_seconds(text: str) -> float:
    """A number of seconds that a timer can wait: finite and above zero (not nan, not inf)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds: {text}")
    return seconds


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def existing_directory(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    return path


def directory_to_write(text: str) -> Path:
    """A directory to write into: made when missing; refused when something else is there."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory to write into")
    return path


def remote_of(args: argparse.Namespace, space: Workspace) -> str:
    """--remote, else promotion.remote, else the repository URL Argo CD reads."""
    remote: str = args.remote or space.config.promotion.remote or space.config.repository_url
    return remote


def landing(args: argparse.Namespace, remote: str) -> Landing:
    return Landing(
        credentials=git.credentials_from_environment(),
        dry_run=getattr(args, "dry_run", False),
        max_attempts=args.max_attempts,
        pull_requests=pull_requests_from_environment(remote),
        log=lambda line: print(line, file=sys.stderr),
        validator=edit_findings,
        mirrors=mirror.checked_mirrors_directory(args.mirror_dir),
    )

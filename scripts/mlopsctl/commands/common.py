"""What every subcommand that works on the repository needs: its root, config and tools."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlopsctl.base import git
from mlopsctl.base.config import Config, find_repository_root, load_config
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.github import PullRequests, repository_slug
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.base.toolchain import default_tools_dir
from mlopsctl.promote.flows import Landing
from mlopsctl.validate.engine import edit_findings


@dataclass(frozen=True)
class Workspace:
    repository: Path
    config: Config
    tools_dir: Path


def add_repository_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="the platform repository (default: the nearest directory with mlopsctl.yaml)",
    )


def workspace(args: argparse.Namespace) -> Workspace:
    repository = find_repository_root(args.repo or Path.cwd())
    return Workspace(repository, load_config(repository), default_tools_dir(repository))


def select_roots(requested: list[str], discovered: list[str], repository: Path) -> list[str]:
    """Roots named on the command line (checked to exist), or every root."""
    if not requested:
        return discovered
    from mlopsctl.base.kustomize import kustomization_file

    chosen = []
    for raw in requested:
        path = (Path.cwd() / raw).resolve() if not Path(raw).is_absolute() else Path(raw)
        try:
            relative = path.relative_to(repository).as_posix()
        except ValueError:
            raise MlopsctlError(f"ROOT {raw!r} is outside the repository {repository}") from None
        if kustomization_file(path) is None:
            raise MlopsctlError(f"ROOT {raw!r}: no kustomization.yaml in {path}")
        chosen.append(relative)
    return chosen


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = [header, *rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


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


def pull_requests_from_environment(remote: str) -> PullRequests | None:
    """GitHub pull requests when $GITHUB_TOKEN is set; None means: push the branch, print the rest.

    $GITHUB_API_URL (GitHub Enterprise) and $GITHUB_REPOSITORY (owner/name, else read from a
    github.com remote) complete it, as in GitHub Actions.
    """
    token = os.environ.get("GITHUB_TOKEN")
    if not token:
        return None
    slug = repository_slug(remote, os.environ.get("GITHUB_REPOSITORY"))
    if slug is None:
        raise MlopsctlError(
            f"GITHUB_TOKEN is set but {remote!r} is not a github.com remote: set GITHUB_REPOSITORY"
        )
    return PullRequests(os.environ.get("GITHUB_API_URL", "https://api.github.com"), slug, token)


def remote_of(args: argparse.Namespace, space: Workspace) -> str:
    """--remote, else promotion.remote, else the repository URL Argo CD reads."""
    remote: str = args.remote or space.config.promotion.remote or space.config.repository_url
    return remote


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
    if dry_run:
        parser.add_argument(
            "--dry-run", action="store_true", help="print the plan and the diff only"
        )


def positive_integer(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def landing(args: argparse.Namespace, remote: str) -> Landing:
    # The same credentials the service takes (workflows pass their token this way).
    credentials = git.Credentials(
        os.environ.get("MLOPSCTL_GIT_TOKEN") or None,
        os.environ.get("MLOPSCTL_SSH_KEY_FILE") or None,
    )
    return Landing(
        credentials=credentials,
        dry_run=getattr(args, "dry_run", False),
        max_attempts=args.max_attempts,
        pull_requests=pull_requests_from_environment(remote),
        log=lambda line: print(line, file=sys.stderr),
        validator=edit_findings,
    )


def check_environment(space: Workspace, environment: str | None) -> str | None:
    if environment is not None and environment not in space.config.environments:
        raise MlopsctlError(
            f"--env {environment!r} is not one of {list(space.config.environments)}"
        )
    return environment


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    Path(temporary).replace(path)

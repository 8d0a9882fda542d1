"""The repository a subcommand works on: its root, config and tools, and what it picks there."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from mlopsctl.base.config import Config, find_repository_root, load_config
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.toolchain import default_tools_dir


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


def check_environment(space: Workspace, environment: str | None) -> str | None:
    if environment is not None and environment not in space.config.environments:
        raise MlopsctlError(
            f"--env {environment!r} is not one of {list(space.config.environments)}"
        )
    return environment

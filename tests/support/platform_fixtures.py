"""This repository's platform committed to a fresh bare remote, with a model name of its own."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def git(directory: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=directory, check=True, capture_output=True, text=True
    ).stdout


def commit_all(directory: Path, message: str) -> None:
    """Commit everything in `directory` as a person would, bytes as they are (no CRLF fixes)."""
    git(directory, "add", "--all")
    git(
        directory,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.test",
        "-c",
        "core.autocrlf=false",
        "commit",
        "-qm",
        message,
    )


_names = itertools.count()


@dataclass
class Platform:
    checkout: Path
    remote: Path
    model: str

    def log(self, branch: str = "main") -> list[str]:
        return git(self.remote, "log", "--format=%s", branch).splitlines()

    def show(self, path: str, branch: str = "main") -> str:
        return git(self.remote, "show", f"{branch}:{path}")

    def trailers(self, branch: str = "main") -> dict[str, str]:
        raw = git(self.remote, "log", "-1", "--format=%(trailers:unfold)", branch)
        return dict(line.split(": ", 1) for line in raw.strip().splitlines())

    def arguments(self, name: str, mlflow_url: str, *extra: str) -> list[str]:
        """`mlopsctl NAME`'s arguments against this checkout, remote and MLflow."""
        return [
            name,
            "--repo",
            str(self.checkout),
            "--remote",
            str(self.remote),
            "--mlflow-uri",
            mlflow_url,
            *extra,
        ]

    def command(self, cli: Any, name: str, mlflow_url: str, *extra: str) -> Any:
        """`mlopsctl NAME` through main()."""
        return cli(*self.arguments(name, mlflow_url, *extra))

    def commit_and_push(self, message: str) -> None:
        """The checkout's changes committed and pushed to the remote's main."""
        commit_all(self.checkout, message)
        git(self.checkout, "push", "--quiet", str(self.remote), "HEAD:main")

    def promote_argv(self, mlflow_url: str, environment: str) -> list[str]:
        """`mlopsctl promote --env ENVIRONMENT` as another process runs it."""
        mlopsctl = str(Path(sys.executable).parent / "mlopsctl")
        return [mlopsctl, *self.arguments("promote", mlflow_url, "--env", environment)]

    def pin(self, environment: str, branch: str = "main") -> str:
        text = self.show(f"overlays/{environment}/model-server/kustomization.yaml", branch)
        return text.split(f"models:/{self.model}/")[1].split()[0]


@pytest.fixture
def platform(platform_copy: Path) -> Platform:
    """This repository's tree with its own model name, committed to a fresh bare remote."""
    model = f"iris-{next(_names)}"
    for path in platform_copy.glob("overlays/*/*/kustomization.yaml"):
        path.write_text(path.read_text().replace("iris-classifier", model))
    git(platform_copy, "init", "--quiet", "--initial-branch=main")
    commit_all(platform_copy, "platform")
    remote = platform_copy.parent / "remote.git"
    git(platform_copy.parent, "clone", "--quiet", "--bare", str(platform_copy), str(remote))
    return Platform(platform_copy, remote, model)


def start_pinned_at(platform: Platform, version: str) -> None:
    """Every model pin on main at `version`, as if promoted before: the committed pins are 0
    (nothing promoted), and these tests are about what happens once something was."""
    for path in platform.checkout.glob("overlays/*/*/kustomization.yaml"):
        text = path.read_text()
        path.write_text(
            re.sub(rf"models:/{platform.model}/[0-9]+", f"models:/{platform.model}/{version}", text)
        )
    platform.commit_and_push(f"pinned at v{version}")

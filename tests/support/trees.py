"""Trees to break: a copy of the platform (the `platform_copy` fixture), small trees written
from text, and edits to the YAML in them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import PLATFORM_PATHS, REPOSITORY

MINIMAL_CONFIG = """\
repository:
  url: https://example.test/platform.git
environments: [local]
kubernetesVersion: "1.35"
"""


@pytest.fixture
def platform_copy(tmp_path: Path) -> Iterator[Path]:
    """A copy of this repository's platform tree, free to break."""
    destination = tmp_path / "platform"
    destination.mkdir()
    for name in PLATFORM_PATHS:
        source = REPOSITORY / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        else:
            shutil.copy2(source, destination / name)
    yield destination


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def edit_yaml(path: Path, change: Callable[[list[Any]], None]) -> None:
    """Load every document of a YAML file, change them in place, write them back."""
    documents = list(yaml.safe_load_all(path.read_text()))
    change(documents)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))


def patch_applications(repository: Path, environment: str, patch: dict[str, Any]) -> None:
    """Add `patch` to apps/<env>/kustomization.yaml: it sees base/argocd-apps' Applications by
    their names before the environment's suffix (`promoter`, not `promoter-staging`)."""
    edit_yaml(
        repository / f"apps/{environment}/kustomization.yaml",
        lambda documents: documents[0]["patches"].append(patch),
    )


def drop_application(repository: Path, environment: str, component: str) -> None:
    """Take `component`'s Application out of one environment."""
    patch = (
        "$patch: delete\napiVersion: argoproj.io/v1alpha1\nkind: Application\n"
        f"metadata:\n  name: {component}\n"
    )
    patch_applications(repository, environment, {"patch": patch})


def minimal_remote(directory: Path) -> Path:
    """A bare remote whose main holds a minimal mlopsctl.yaml: what a promoter's pass checks
    out and reads before the work it does there (which the tests that use it replace)."""
    import subprocess

    checkout = write_tree(directory / "minimal-checkout", {"mlopsctl.yaml": MINIMAL_CONFIG})
    remote = directory / "minimal-remote.git"
    for arguments in (
        ["init", "--quiet", "--initial-branch=main", str(checkout)],
        ["-C", str(checkout), "add", "."],
        [
            "-C",
            str(checkout),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.test",
            "commit",
            "--quiet",
            "-m",
            "config",
        ],
        ["clone", "--quiet", "--bare", str(checkout), str(remote)],
    ):
        subprocess.run(["git", *arguments], check=True, capture_output=True)
    return remote

"""Two revisions of a small repository rendered by the pinned kustomize and compared: only the
roots that read a changed file, each revision in its own worktree (the user's checkout is never
switched), the working tree as it is when there is no head commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlopsctl.base import toolchain
from mlopsctl.base.config import load_config
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.diff.manifests import RootDiff
from mlopsctl.diff.report import DiffReport
from mlopsctl.diff.revisions import Revision, compare, default_base
from tests.support.paths import TOOLS_DIR
from tests.support.trees import MINIMAL_CONFIG, write_tree


def git(directory: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=directory, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_all(directory: Path, message: str) -> str:
    git(directory, "add", "--all")
    git(directory, "-c", "user.name=t", "-c", "user.email=t@example.test", "commit", "-qm", message)
    return git(directory, "rev-parse", "HEAD")


def configmap(colour: str) -> str:
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  colour: {colour}\n"
    )


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A base, an overlay built on it and a root of its own, committed on main."""
    directory = write_tree(
        tmp_path / "repository",
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "base/app/kustomization.yaml": "resources:\n  - configmap.yaml\n",
            "base/app/configmap.yaml": configmap("blue"),
            "overlays/local/app/kustomization.yaml": (
                "namespace: shop\nresources:\n  - ../../../base/app\n"
            ),
            "other/kustomization.yaml": "resources:\n  - configmap.yaml\n",
            "other/configmap.yaml": configmap("grey"),
        },
    )
    git(directory, "init", "--quiet", "--initial-branch=main")
    commit_all(directory, "platform")
    return directory


def changes(root: RootDiff) -> list[tuple[str, str]]:
    return [(resource.reference, resource.change) for resource in root.resources]


def compared(repository: Path, base: str, head: str | None) -> DiffReport:
    return compare(
        repository,
        load_config(repository),
        toolchain.resolve(TOOLS_DIR),
        Revision(base, git(repository, "rev-parse", base)),
        Revision(head or "working tree", head and git(repository, "rev-parse", head)),
    )


def test_only_the_roots_that_read_a_changed_file_are_compared(repository: Path):
    git(repository, "checkout", "--quiet", "-b", "green")
    (repository / "base/app/configmap.yaml").write_text(configmap("green"))
    commit_all(repository, "green")
    report = compared(repository, "main", "green")
    assert report.changed_files == ["base/app/configmap.yaml"]
    assert [root.root for root in report.roots] == ["base/app", "overlays/local/app"]
    base, overlay = report.roots
    assert changes(base) == [("ConfigMap/settings", "changed")]
    assert changes(overlay) == [("ConfigMap/shop/settings", "changed")]
    assert "-  colour: blue\n+  colour: green\n" in overlay.resources[0].diff
    # The user's checkout stays on its branch, and no worktree is left behind.
    assert git(repository, "branch", "--show-current") == "green"
    assert len(git(repository, "worktree", "list").splitlines()) == 1


def test_the_working_tree_is_compared_as_it_is_untracked_roots_included(repository: Path):
    (repository / "other/configmap.yaml").write_text(configmap("black"))
    write_tree(
        repository,
        {
            "new/kustomization.yaml": "resources:\n  - configmap.yaml\n",
            "new/configmap.yaml": configmap("white"),
        },
    )
    report = compared(repository, "main", None)
    assert report.head == "working tree"
    assert {root.root: root.status for root in report.roots} == {
        "new": "added",
        "other": "changed",
    }
    assert git(repository, "status", "--porcelain") == "M other/configmap.yaml\n?? new/"


def test_a_root_broken_at_the_head_is_an_error_and_one_broken_at_the_base_a_warning(
    repository: Path,
):
    (repository / "other/kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    commit_all(repository, "break other")
    git(repository, "branch", "broken")
    (repository / "other/kustomization.yaml").write_text("resources:\n  - configmap.yaml\n")
    commit_all(repository, "mend other")

    to_broken = compared(repository, "main~2", "broken")
    [root] = to_broken.roots
    assert (root.root, root.status) == ("other", "error")
    assert root.message.startswith("does not render: ") and "missing.yaml" in root.message

    mended = compared(repository, "broken", "main")
    [root] = mended.roots
    assert root.status == "changed"
    [warning] = root.warnings
    assert warning.startswith("did not render at the base (") and "missing.yaml" in warning
    assert warning.endswith("): compared with nothing")
    assert changes(root) == [("ConfigMap/settings", "added")]


def test_a_root_that_needs_the_network_is_named_not_fetched(repository: Path):
    (repository / "other/kustomization.yaml").write_text(
        "resources:\n  - configmap.yaml\n"
        "  - https://raw.githubusercontent.com/example-org/nowhere/v1/install.yaml\n"
    )
    report = compared(repository, "main", None)
    [root] = report.roots
    assert (root.root, root.status) == ("other", "not rendered")
    assert "fetches https://raw.githubusercontent.com/example-org/nowhere/v1/install.yaml" in (
        root.message
    )
    assert root.message.endswith("pass --network to compare it")


def test_the_default_base_is_where_a_pull_request_would_merge(repository: Path, tmp_path: Path):
    assert default_base(repository, "main") == "main"
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(repository), str(clone))
    assert default_base(clone, "main") == "origin/main"
    with pytest.raises(MlopsctlError, match="neither origin/trunk nor trunk exists here"):
        default_base(clone, "trunk")

"""`gitops.last_commits_touching`: one `git log` answers what `last_commit_touching` answers per
path, for a platform in a subfolder of a larger repository, across a rename, and across a merge
whose conflict was resolved by hand."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlopsctl.base import git as gitops


def git(directory: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.test", *arguments],
        cwd=directory,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit(directory: Path, message: str, **files: str) -> str:
    for name, text in files.items():
        path = directory / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(directory, "add", "-A")
    git(directory, "commit", "-qm", message)
    return git(directory, "rev-parse", "HEAD")


def test_one_log_answers_as_each_path_alone(tmp_path: Path):
    repository = tmp_path / "monorepo"
    repository.mkdir()
    git(repository, "init", "-q", "--initial-branch=main")
    platform = repository / "platform"
    commit(repository, "start", platform__a="a1\n", platform__b="b1\n", other__a="x\n")
    renamed_from = commit(repository, "b again", platform__b="b2\n")
    git(repository, "mv", "platform/b", "platform/c")
    renamed = commit(repository, "rename b to c")
    git(repository, "checkout", "-qb", "side")
    commit(repository, "a on side", platform__a="side\n")
    git(repository, "checkout", "-q", "main")
    commit(repository, "a on main", platform__a="main\n")
    subprocess.run(["git", "merge", "-q", "side"], cwd=repository, capture_output=True)
    resolved = commit(repository, "merge side, a resolved by hand", platform__a="both\n")
    commit(repository, "outside the platform", other__a="y\n")

    paths = ["a", "c"]
    found = gitops.last_commits_touching(platform, "main", paths)
    assert {path: commit for path, (_place, commit) in found.items()} == {
        "a": resolved,
        "c": renamed,
    }
    for path in paths:
        assert found[path][1] == gitops.last_commit_touching(platform, "main", [path])
    assert found["a"][0] < found["c"][0]  # the log's order: the merge is newer
    assert renamed != renamed_from

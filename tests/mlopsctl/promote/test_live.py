"""`status --live`'s joins, on a real git history: each row's commit is the last one that changed
its pin files on the branch Argo CD follows, the synced revision is checked against it by git,
the cluster is asked about the component that serves the model, and the deployment tags the
rows call for are written in order. Clusters are stand-ins here; test_status_live.py runs the
whole command against a real kube-apiserver."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlopsctl.base import inventory
from mlopsctl.base.registry import ModelVersion
from mlopsctl.promote.live import component, live_rows, record_deployments
from mlopsctl.promote.live_status import (
    GIT_AHEAD,
    IN_STEP,
    UNREACHABLE,
    ApplicationState,
    ClusterView,
    ServedState,
)
from mlopsctl.promote.pin_status import PinnedFile, StatusRow, status_rows
from tests.support.trees import MINIMAL_CONFIG, write_tree

MODEL = "iris"
SERVER = "overlays/local/model-server/kustomization.yaml"
FRONTEND = "overlays/local/streamlit/kustomization.yaml"


def git(directory: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=directory, check=True, capture_output=True, text=True
    ).stdout.strip()


def pin_file(version: str) -> str:
    return (
        "configMapGenerator:\n  - name: pin\n    literals:\n"
        f"      # mlopsctl: model {MODEL}@champion\n      - MODEL_URI=models:/{MODEL}/{version}\n"
    )


def commit(repository: Path, files: dict[str, str], message: str) -> str:
    write_tree(repository, files)
    git(repository, "add", "--all")
    git(repository, "-c", "user.name=t", "-c", "user.email=t@e.test", "commit", "-qm", message)
    return git(repository, "rev-parse", "HEAD")


class Registry:
    """The registry's answers: the alias names version 2; every version is READY."""

    base_url = "http://registry.test"

    def version_by_alias(self, model: str, alias: str) -> ModelVersion:
        return self.version(model, "2")

    def version(self, model: str, version: str) -> ModelVersion:
        return ModelVersion(model, version, "READY", f"run-{version}", f"models:/{model}/{version}")


class Reader:
    """An environment's cluster as EnvironmentReader reads it; records what it was asked for."""

    def __init__(self, view: ClusterView) -> None:
        self.answer = view
        self.asked: list[str] = []

    def view(self, component_name: str) -> ClusterView:
        self.asked.append(component_name)
        return self.answer


def synced(revision: str, served_version: str = "2") -> ClusterView:
    return ClusterView(
        application=ApplicationState(
            "model-server-local", "Synced", revision, "Healthy", "", "Succeeded", ""
        ),
        served=ServedState({MODEL: served_version}, 1, 1, 1, True, 1, 1),
    )


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """main: both pins at v1, then at v2, then a change to an unrelated file."""
    repository = tmp_path / "repository"
    repository.mkdir()
    git(repository, "init", "--quiet", "--initial-branch=main")
    commits = {
        "v1": commit(
            repository,
            {"mlopsctl.yaml": MINIMAL_CONFIG, SERVER: pin_file("1"), FRONTEND: pin_file("1")},
            "pins at v1",
        ),
        "v2": commit(repository, {SERVER: pin_file("2"), FRONTEND: pin_file("2")}, "pins at v2"),
        "later": commit(repository, {"README.md": "unrelated\n"}, "docs"),
    }
    return repository, commits


def rows_of(repository: Path) -> list[StatusRow]:
    return status_rows(inventory.model_pins(inventory.scan(repository)), Registry())


def test_the_commit_is_the_last_that_changed_a_pin_file_and_an_unreachable_cluster_a_row(
    history: tuple[Path, dict[str, str]],
):
    repository, commits = history
    [row] = live_rows(repository, "main", rows_of(repository), {"local": "connection refused"})
    assert row.commit == commits["v2"]  # not the later commit, which changed no pin
    assert (row.state, row.detail) == (UNREACHABLE, "connection refused")
    assert (row.sync, row.served, row.contains_promotion) == ("-", "-", None)
    assert (row.git, row.mlflow) == ("2", "2")


def test_a_synced_revision_without_the_pin_commit_is_git_ahead_of_the_cluster(
    history: tuple[Path, dict[str, str]],
):
    repository, commits = history
    rows = rows_of(repository)
    [behind] = live_rows(repository, "main", rows, {"local": Reader(synced(commits["v1"]))})
    assert (behind.contains_promotion, behind.state) == (False, GIT_AHEAD)
    assert behind.revision == commits["v1"][:12]
    [caught_up] = live_rows(repository, "main", rows, {"local": Reader(synced(commits["later"]))})
    assert (caught_up.contains_promotion, caught_up.state) == (True, IN_STEP)
    # A revision this clone has never fetched proves nothing either way.
    [unknown] = live_rows(repository, "main", rows, {"local": Reader(synced("f" * 40))})
    assert unknown.contains_promotion is None


def test_the_followed_branch_decides_the_commit_not_the_checked_out_one(
    history: tuple[Path, dict[str, str]],
):
    repository, commits = history
    git(repository, "checkout", "--quiet", "-b", "unmerged")
    commit(repository, {SERVER: pin_file("3")}, "an unmerged pin")
    [row] = live_rows(repository, "main", rows_of(repository), {"local": "unreachable"})
    assert row.commit == commits["v2"]


def test_the_newest_change_of_any_of_the_rows_files_is_its_commit(
    history: tuple[Path, dict[str, str]],
):
    repository, _commits = history
    frontend_last = commit(repository, {FRONTEND: pin_file("2") + "# a comment\n"}, "frontend")
    commit(repository, {"README.md": "again\n"}, "docs again")
    rows = rows_of(repository)
    assert [pinned.file for pinned in rows[0].files] == [SERVER, FRONTEND]
    [row] = live_rows(repository, "main", rows, {"local": "unreachable"})
    assert row.commit == frontend_last


def test_the_cluster_is_asked_about_the_component_that_serves_the_model(
    history: tuple[Path, dict[str, str]],
):
    repository, commits = history
    reader = Reader(synced(commits["later"]))
    live_rows(repository, "main", rows_of(repository), {"local": reader})
    assert reader.asked == ["model-server"]
    (repository / SERVER).unlink()
    commit(repository, {}, "the model server no longer pins it")
    frontend_only = Reader(synced(commits["later"]))
    live_rows(repository, "main", rows_of(repository), {"local": frontend_only})
    assert frontend_only.asked == ["streamlit"]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ((SERVER, FRONTEND), "model-server"),
        ((FRONTEND,), "streamlit"),
        (("overlays/local/kustomization.yaml",), "model-server"),
    ],
)
def test_component_of_a_row(files: tuple[str, ...], expected: str):
    pinned = tuple(PinnedFile(file, 5, "2", "in sync") for file in files)
    row = StatusRow("local", MODEL, "champion", "2", "2", "in sync", "run", files[0], 5, pinned)
    assert component(row) == expected


class TaggingRegistry:
    """Deployment tags as MLflow keeps them on versions; every write recorded in order."""

    def __init__(self, tagged: dict[tuple[str, str], dict[str, str]]) -> None:
        self.tagged = tagged
        self.writes: list[tuple[str, ...]] = []

    def versions_tagged(self, key: str) -> dict[tuple[str, str], dict[str, str]]:
        return {version: tags for version, tags in self.tagged.items() if key in tags}

    def set_version_tag(self, model: str, version: str, key: str, value: str) -> None:
        self.writes.append(("set", model, version, key, value))

    def delete_version_tag(self, model: str, version: str, key: str) -> None:
        self.writes.append(("delete", model, version, key))


def test_record_deployments_tags_the_version_now_live_and_untags_the_one_replaced(
    history: tuple[Path, dict[str, str]],
):
    repository, commits = history
    [row] = live_rows(
        repository, "main", rows_of(repository), {"local": Reader(synced(commits["later"]))}
    )
    assert row.in_step and row.contains_promotion
    registry: Any = TaggingRegistry(
        {(MODEL, "1"): {"deployed.local": commits["v1"], "deployed.local.since": "yesterday"}}
    )
    changes = record_deployments(registry, "local", [row], "2026-01-02T03:04:05+00:00")
    # The commit key last when setting, first-searched when removing: a pass cut short is
    # finished by the next one.
    assert registry.writes == [
        ("set", MODEL, "2", "deployed.local.since", "2026-01-02T03:04:05+00:00"),
        ("set", MODEL, "2", "deployed.local", commits["v2"]),
        ("delete", MODEL, "1", "deployed.local.since"),
        ("delete", MODEL, "1", "deployed.local"),
    ]
    assert [str(change) for change in changes] == [
        f"{MODEL} v2: deployed.local.since=2026-01-02T03:04:05+00:00",
        f"{MODEL} v2: deployed.local={commits['v2']}",
        f"{MODEL} v1: removed deployed.local.since",
        f"{MODEL} v1: removed deployed.local",
    ]


def test_record_deployments_writes_nothing_for_a_cluster_it_could_not_read(
    history: tuple[Path, dict[str, str]],
):
    repository, commits = history
    rows = live_rows(repository, "main", rows_of(repository), {"local": "connection refused"})
    registry: Any = TaggingRegistry({(MODEL, "1"): {"deployed.local": commits["v1"]}})
    assert record_deployments(registry, "local", rows, "now") == []
    assert registry.writes == []

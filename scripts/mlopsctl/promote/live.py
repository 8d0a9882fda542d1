"""`status --live`'s rows, joined from their three sources: the registry's answer against Git
(`status.StatusRow`), the branch Argo CD follows (the last commit that changed each pin, and
whether the synced revision contains it) and each environment's cluster (`EnvironmentReader`).
Used by `mlopsctl status --live` and by the promoter, which also writes the deployment tags the
rows call for (`record_deployments`). Side effects: git and the API server, read only; the
registry's version tags, written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from mlopsctl.base import git
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.promote import deployment_tags
from mlopsctl.promote.live_cluster import EnvironmentReader
from mlopsctl.promote.live_status import ClusterView, LiveRow, live_row
from mlopsctl.promote.pin_status import StatusRow

MODEL_SERVER = "model-server"


def live_rows(
    repository: Path,
    followed: str,
    rows: Sequence[StatusRow],
    clusters: Mapping[str, EnvironmentReader | str],
) -> list[LiveRow]:
    """One LiveRow per status row; `clusters` maps each environment to its reader, or to why
    its cluster cannot be reached."""
    files = sorted({pinned.file for row in rows for pinned in row.files})
    last_changes = git.last_commits_touching(repository, followed, files)
    ancestry: dict[tuple[str, str], bool | None] = {}
    joined = []
    for row in rows:
        reached = clusters[row.environment]
        view = (
            ClusterView(error=reached) if isinstance(reached, str) else reached.view(component(row))
        )
        commit = _last_change(repository, followed, row, last_changes)
        revision = view.application.synced_revision if view.application else ""
        contains: bool | None = None
        if commit and revision:
            if (commit, revision) not in ancestry:
                ancestry[(commit, revision)] = git.contains(repository, commit, revision)
            contains = ancestry[(commit, revision)]
        joined.append(live_row(row, view, commit or "", contains))
    return joined


def _last_change(
    repository: Path, followed: str, row: StatusRow, last_changes: Mapping[str, tuple[int, str]]
) -> str | None:
    changes = [last_changes.get(pinned.file) for pinned in row.files]
    if row.files and all(changes):
        return min(change for change in changes if change)[1]
    return git.last_commit_touching(repository, followed, [pinned.file for pinned in row.files])


def component(row: StatusRow) -> str:
    """The component whose pods serve the model: the model server's, if one of the files is."""
    components = [
        PurePosixPath(pinned.file).parts[2]
        for pinned in row.files
        if len(PurePosixPath(pinned.file).parts) > 3
    ]
    return MODEL_SERVER if MODEL_SERVER in components else (components or [MODEL_SERVER])[0]


def record_deployments(
    registry: MlflowRegistry, environment: str, rows: Sequence[LiveRow], now: str
) -> list[deployment_tags.TagChange]:
    """Sets and removes `environment`'s deployment tags as its live rows call for; the changes
    made. Each change is idempotent, so a pass cut short is finished by the next one."""
    tagged = registry.versions_tagged(deployment_tags.deployed_key(environment))
    changes = deployment_tags.plan(environment, rows, tagged, now)
    for change in changes:
        if change.value is None:
            registry.delete_version_tag(change.model, change.version, change.key)
        else:
            registry.set_version_tag(change.model, change.version, change.key, change.value)
    return changes

"""Deployment tags: where each model version runs, written on the version in the registry, so
the registry's UI shows it. Once a promotion is live in an environment (the row is in step end
to end: Argo CD Synced and Healthy on a revision that contains the pin's commit, the pods ready
on the version), the version gets `deployed.<env>` = the pin's last commit and
`deployed.<env>.since` = the time, both from when it was first seen live; a version that no longer
runs there loses both.

Pure: an environment's live rows and the versions that carry its tag now, in; the tag changes
out. A model with any row not yet in step is left as it is: its rollout is under way or
cannot be seen, and the version it replaces may still be serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlopsctl.promote.live_status import REFUSED, UNREACHABLE, LiveRow


def deployed_key(environment: str) -> str:
    return f"deployed.{environment}"


def since_key(environment: str) -> str:
    return f"deployed.{environment}.since"


@dataclass(frozen=True)
class TagChange:
    model: str
    version: str
    key: str
    value: str | None  # None: remove the tag

    def __str__(self) -> str:
        if self.value is None:
            return f"{self.model} v{self.version}: removed {self.key}"
        return f"{self.model} v{self.version}: {self.key}={self.value}"


def plan(
    environment: str,
    rows: Sequence[LiveRow],
    tagged: Mapping[tuple[str, str], Mapping[str, str]],
    now: str,
) -> list[TagChange]:
    """`tagged`: (model, version) -> tags, for the versions that carry `deployed.<env>` now;
    `now`: the time to write for a version newly seen live (ISO 8601, UTC)."""
    key, since = deployed_key(environment), since_key(environment)
    mine = [row for row in rows if row.environment == environment]
    if any(row.state in (UNREACHABLE, REFUSED) for row in mine):
        return []  # nothing about this environment can be confirmed, not even a removal
    # In step, and proven so: the synced revision is known to contain the pin's commit.
    unsettled = {row.model for row in mine if not row.in_step or row.contains_promotion is not True}
    live: dict[tuple[str, str], str] = {}
    for row in mine:
        if row.model not in unsettled and row.commit:
            live[(row.model, row.served)] = row.commit
    changes: list[TagChange] = []
    for (model, version), commit in sorted(live.items()):
        # A version keeps the commit it was first seen live with: later commits to the pin's
        # file (an image tag, another pin) do not deploy it again.
        if key not in tagged.get((model, version), {}):
            # `key` last when setting and first-searched when removing: a pass cut short leaves
            # `key` out of date, so the next pass sees the work as undone and finishes it.
            changes.append(TagChange(model, version, since, now))
            changes.append(TagChange(model, version, key, commit))
    for (model, version), tags in sorted(tagged.items()):
        if (model, version) in live or model in unsettled:
            continue
        if since in tags:
            changes.append(TagChange(model, version, since, None))
        changes.append(TagChange(model, version, key, None))
    return changes

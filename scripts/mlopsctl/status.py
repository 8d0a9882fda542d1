"""Where each model pin stands against the alias it follows."""

from __future__ import annotations

from dataclasses import dataclass

from mlopsctl.gates import nothing_pinned
from mlopsctl.inventory import LocatedPin
from mlopsctl.registry import ModelVersion, Registry

IN_SYNC = "in sync"
BEHIND = "behind"
ALIAS_MISSING = "alias missing"
VERSION_MISSING = "version missing"
NOT_READY = "not READY"
# A pin of version 0: nothing promoted to the environment yet. With no alias to follow either,
# the environment is as it should be (new, waiting for its first promotion): in step.
NONE_PROMOTED = "none promoted"
# Nothing promoted yet, but the alias names a version: the first promotion is due.
FIRST_PROMOTION_DUE = "none promoted, behind"


@dataclass(frozen=True)
class StatusRow:
    environment: str
    model: str
    alias: str
    pinned: str
    desired: str | None
    state: str
    run_id: str
    file: str
    line: int

    @property
    def in_step(self) -> bool:
        return self.state in (IN_SYNC, NONE_PROMOTED)


def status_rows(pins: list[LocatedPin], registry: Registry) -> list[StatusRow]:
    """One row per model pin; registry answers are shared between pins following one alias."""
    by_alias: dict[tuple[str, str], ModelVersion | None] = {}
    by_version: dict[tuple[str, str], ModelVersion | None] = {}
    rows = []
    for located in pins:
        key = (located.model, located.alias)
        if key not in by_alias:
            by_alias[key] = registry.version_by_alias(*key)
        target = by_alias[key]
        pinned = located.pin.value
        if target is not None:
            by_version[(target.model, target.version)] = target
        if nothing_pinned(pinned):
            # There is no version 0 to ask the registry about.
            if target is None:
                state = NONE_PROMOTED
            elif target.status != "READY":
                state = NOT_READY
            else:
                state = FIRST_PROMOTION_DUE
        else:
            if (located.model, pinned) not in by_version:
                by_version[(located.model, pinned)] = registry.version(located.model, pinned)
            pinned_version = by_version[(located.model, pinned)]
            if target is None:
                state = ALIAS_MISSING
            elif pinned_version is None:
                state = VERSION_MISSING
            elif target.status != "READY":
                state = NOT_READY
            elif target.version != pinned:
                state = BEHIND
            else:
                state = IN_SYNC
        rows.append(
            StatusRow(
                environment=located.environment or "",
                model=located.model,
                alias=located.alias,
                pinned=pinned,
                desired=target.version if target else None,
                state=state,
                run_id=target.run_id if target else "",
                file=located.file,
                line=located.pin.value_line,
            )
        )
    return rows

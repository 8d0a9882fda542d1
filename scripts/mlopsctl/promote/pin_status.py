"""Where each environment's model pins stand against the alias they follow."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath

from mlopsctl.base.inventory import LocatedPin
from mlopsctl.base.registry import ModelVersion, Registry
from mlopsctl.promote.gates import nothing_pinned
from mlopsctl.promote.registry_reads import read_all

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
# The files of one environment pin one model under one alias at different versions: the
# environment serves two versions at once (a model server and a frontend that disagree), which
# no single state describes. The full state reads "files disagree: model-server v2, streamlit v1".
FILES_DISAGREE = "files disagree"


@dataclass(frozen=True)
class PinnedFile:
    """One file's pin of the row's model: where it is, what it pins, and how that stands alone."""

    file: str  # repository-relative
    line: int
    pinned: str
    state: str


@dataclass(frozen=True)
class StatusRow:
    """One environment's pins of one model under one alias, however many files hold them."""

    environment: str
    model: str
    alias: str
    # The version every file pins; when they disagree, each distinct version in file order,
    # joined by commas, so the field stays a string for readers that predate `files`.
    pinned: str
    desired: str | None
    state: str
    run_id: str
    # The first of `files`, kept for readers from when a row was a single pin.
    file: str
    line: int
    files: tuple[PinnedFile, ...]

    @property
    def in_step(self) -> bool:
        return self.state in (IN_SYNC, NONE_PROMOTED)


def status_rows(pins: list[LocatedPin], registry: Registry) -> list[StatusRow]:
    """One row per (environment, model, alias), in the order the pins were found.

    The registry is asked once per (model, alias), then once per pinned version that no alias
    answered: pins following one alias or pinning one version share its answer. Each round is
    read concurrently (`registry_reads.read_all`): a failed read raises as a serial loop would,
    the first failing key in pin order, and no read starts after it. Aliases are all read before
    any version, so a version read that would have failed before a later pin's failing alias
    read is not the error raised, nor is one that an alias answer made unnecessary."""
    by_alias = read_all(
        ((located.model, located.alias) for located in pins),
        lambda key: registry.version_by_alias(*key),
    )
    by_version: dict[tuple[str, str], ModelVersion | None] = {
        (target.model, target.version): target for target in by_alias.values() if target
    }
    by_version.update(
        read_all(
            (
                (located.model, located.pin.value)
                for located in pins
                if not nothing_pinned(located.pin.value)
                and (located.model, located.pin.value) not in by_version
            ),
            lambda key: registry.version(*key),
        )
    )
    groups: dict[tuple[str, str, str], list[PinnedFile]] = {}
    for located in pins:
        target = by_alias[(located.model, located.alias)]
        pinned = located.pin.value
        groups.setdefault((located.environment or "", located.model, located.alias), []).append(
            PinnedFile(
                file=located.file,
                line=located.pin.value_line,
                pinned=pinned,
                state=_pin_state(pinned, target, by_version.get((located.model, pinned))),
            )
        )
    rows = []
    for (environment, model, alias), found in groups.items():
        files = tuple(sorted(found, key=lambda pinned_file: (pinned_file.file, pinned_file.line)))
        target = by_alias[(model, alias)]
        versions = list(dict.fromkeys(pinned_file.pinned for pinned_file in files))
        if len(versions) == 1:
            # One version everywhere: every file's state is the same, as it depends only on
            # the version and the alias.
            state = files[0].state
        else:
            names = short_names(environment, files)
            state = f"{FILES_DISAGREE}: " + ", ".join(
                f"{name} v{pinned_file.pinned}"
                for name, pinned_file in zip(names, files, strict=True)
            )
        rows.append(
            StatusRow(
                environment=environment,
                model=model,
                alias=alias,
                pinned=",".join(versions),
                desired=target.version if target else None,
                state=state,
                run_id=target.run_id if target else "",
                file=files[0].file,
                line=files[0].line,
                files=files,
            )
        )
    return rows


def _pin_state(
    pinned: str, target: ModelVersion | None, pinned_version: ModelVersion | None
) -> str:
    if nothing_pinned(pinned):
        # There is no version 0 to ask the registry about.
        if target is None:
            return NONE_PROMOTED
        if target.status != "READY":
            return NOT_READY
        return FIRST_PROMOTION_DUE
    if target is None:
        return ALIAS_MISSING
    if pinned_version is None:
        return VERSION_MISSING
    if target.status != "READY":
        return NOT_READY
    if target.version != pinned:
        return BEHIND
    return IN_SYNC


def short_names(environment: str, files: tuple[PinnedFile, ...]) -> list[str]:
    """What to call each file in a table or a state: its directory under overlays/<env>/
    (model-server, streamlit), which the environment column already qualifies; the file's name
    for a pin in the overlay's own root. Where two files would get one name, each is called by
    its path (under the overlay, else in the repository); where two pins share a file, the line
    is added."""
    overlay = PurePosixPath("overlays", environment)
    short: list[str] = []
    long: list[str] = []
    for pinned_file in files:
        path = PurePosixPath(pinned_file.file)
        inside = path.is_relative_to(overlay)
        long.append(path.relative_to(overlay).as_posix() if inside else path.as_posix())
        directory = path.parent
        short.append(
            directory.relative_to(overlay).as_posix()
            if inside and directory != overlay
            else path.name
        )
    files_named: dict[str, set[str]] = {}
    for name, pinned_file in zip(short, files, strict=True):
        files_named.setdefault(name, set()).add(pinned_file.file)
    pins_in = Counter(pinned_file.file for pinned_file in files)
    names = []
    for name, whole, pinned_file in zip(short, long, files, strict=True):
        chosen = whole if len(files_named[name]) > 1 else name
        names.append(f"{chosen}:{pinned_file.line}" if pins_in[pinned_file.file] > 1 else chosen)
    return names

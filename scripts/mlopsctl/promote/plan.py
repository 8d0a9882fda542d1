"""Planning: what the registry's aliases want against what Git pins, through the gates.

A plan is typed: the edits that pass their gates, the refusals (who, what, why), the items that
could not be planned (a failed registry read) and the pins already in step. One bad item never
stops the others: its failure is recorded and the rest are planned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlopsctl.base import inventory
from mlopsctl.base.config import Config
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.registry import ModelVersion, Registry
from mlopsctl.promote.edits import Edit, ModelChange
from mlopsctl.promote.gates import nothing_pinned, refusals, uncompared
from mlopsctl.promote.registry_reads import PlanAnswers


@dataclass(frozen=True)
class Refusal:
    """A version the alias points at that a gate keeps out of an environment."""

    environment: str
    model: str
    alias: str
    version: str
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.environment}: {self.model}@{self.alias} -> v{self.version} refused: "
            f"{self.reason}"
        )


@dataclass(frozen=True)
class Failure:
    """An item (environment and model or image) that could not be planned or landed this pass."""

    environment: str
    key: str
    reason: str
    exit_code: int = 1  # the exit code of the error behind it (3 registry, 4 git remote)

    def __str__(self) -> str:
        return f"{self.environment}: {self.key}: failed: {self.reason}"


@dataclass(frozen=True)
class Settled:
    """A model pin already at the version its alias points at."""

    environment: str
    model: str
    alias: str
    version: str


@dataclass
class Plan:
    edits: list[Edit] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    settled: list[Settled] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def for_environment(self, environment: str) -> Plan:
        return Plan(
            [edit for edit in self.edits if edit.environment == environment],
            [refusal for refusal in self.refusals if refusal.environment == environment],
            [failure for failure in self.failures if failure.environment == environment],
            [settled for settled in self.settled if settled.environment == environment],
            [note for note in self.notes if note.startswith(f"{environment}: ")],
        )


def plan_models(
    pins: Sequence[inventory.LocatedPin],
    registry: Registry,
    config: Config,
    source: str = "cli",
    compare_with_pinned: bool = True,
) -> Plan:
    """The plan for the given model pins; each pin is planned on its own.

    The registry is read through this plan's own `PlanAnswers`: every (model, alias) the pins
    follow is fetched up front, concurrently, and each read is made once per key, so the pins
    that follow one alias are planned from one answer. The answers are dropped with the plan:
    a plan made after a rejected push must see what the registry says then."""
    result = Plan()
    answers = PlanAnswers(registry)
    answers.prefetch_aliases((located.model, located.alias) for located in pins)
    _prefetch_for_edits(pins, answers, config)
    for located in pins:
        environment = located.environment or ""
        try:
            # A failed read is kept as its key's answer: every pin that needs it fails alone.
            _plan_one(located, answers, config, source, compare_with_pinned, result)
        except MlopsctlError as error:
            # A failed read for one model must not hold back every other model's promotion.
            result.failures.append(
                Failure(
                    environment,
                    located.model,
                    f"{located.model}@{located.alias}: {error}",
                    error.exit_code,
                )
            )
    return result


def _prefetch_for_edits(
    pins: Sequence[inventory.LocatedPin], answers: PlanAnswers, config: Config
) -> None:
    """The reads each pin whose alias moved will make (its new run's metrics, its signature for
    the gate, the pinned version and then that version's run), concurrently, in two rounds:
    the second needs the pinned versions' runs."""
    moving = []
    for located in pins:
        target = answers.known_alias(located.model, located.alias)
        if target is not None and target.version != located.pin.value:
            moving.append((located, target))
    if not moving:
        return
    answers.prefetch(
        versions=[
            (located.model, located.pin.value)
            for located, _target in moving
            if not nothing_pinned(located.pin.value)
        ],
        metrics=[target.run_id for _located, target in moving if target.run_id],
        signatures=[
            (located.model, target.version)
            for located, target in moving
            if config.promotion.for_environment(located.environment or "").gates.require_signature
        ],
    )
    answers.prefetch(
        metrics=[
            old.run_id
            for located, _target in moving
            if (old := answers.known_version(located.model, located.pin.value)) is not None
            and old.run_id
        ]
    )


def _plan_one(
    located: inventory.LocatedPin,
    registry: Registry,
    config: Config,
    source: str,
    compare_with_pinned: bool,
    result: Plan,
) -> None:
    environment = located.environment or ""
    policy = config.promotion.for_environment(environment)
    target = registry.version_by_alias(located.model, located.alias)
    where = f"{environment}: {located.model}@{located.alias}"
    pinned = located.pin.value
    if target is None:
        nothing_yet = " (none promoted yet)" if nothing_pinned(pinned) else ""
        result.notes.append(
            f"{where}: the alias does not exist in MLflow; pin left at v{pinned}{nothing_yet}"
        )
        return
    if target.version == pinned:
        result.settled.append(Settled(environment, located.model, located.alias, pinned))
        return
    gates = policy.gates
    metrics = registry.run_metrics(target.run_id)
    signature = (
        registry.signature(located.model, target.version) if gates.require_signature else None
    )
    # A pin of 0 records that nothing was promoted yet: there is no version 0 to ask about.
    old = None if nothing_pinned(pinned) else registry.version(located.model, pinned)
    old_metrics = registry.run_metrics(old.run_id) if old is not None else {}
    comparing = gates.not_worse_than is not None and compare_with_pinned
    reasons = refusals(
        gates,
        target,
        metrics,
        signature is not None,
        old_metrics if comparing and old is not None else None,
    )
    if comparing and old is None and not nothing_pinned(pinned):
        # The gate must compare with what runs now; a pinned version the registry does not have
        # gives nothing to compare with, and a gate that cannot be checked does not pass.
        reasons.append(
            f"the pinned v{pinned} does not exist in MLflow, so notWorseThan cannot compare "
            "with it (the gate fails closed)"
        )
    skipped = uncompared(gates, target, pinned) if compare_with_pinned else None
    if skipped is not None and f"{where}: {skipped}" not in result.notes:
        result.notes.append(f"{where}: {skipped}")
    if reasons:
        for reason in reasons:
            refusal = Refusal(environment, located.model, located.alias, target.version, reason)
            if refusal not in result.refusals:  # a model pinned in two files is refused once
                result.refusals.append(refusal)
        return
    result.edits.append(
        ModelChange(
            environment,
            located.file,
            located.model,
            located.alias,
            pinned,
            target,
            metrics,
            old_metrics,
            source=source,
            old_run_id=old.run_id if old is not None else "",
            # Only pull requests show them; a direct commit does not pay for the reads.
            signatures=_signatures(registry, located.model, old, target, signature)
            if policy.mode == "pull-request"
            else None,
        )
    )


def _signatures(
    registry: Registry,
    model: str,
    old: ModelVersion | None,
    new: ModelVersion,
    new_signature: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
    """Both versions' signatures for the review text; None when the registry cannot serve them
    (that only costs the reviewer a line, so it does not stop the promotion)."""
    try:
        old_signature = registry.signature(model, old.version) if old is not None else None
        if new_signature is None:
            new_signature = registry.signature(model, new.version)
    except MlopsctlError:
        return None
    return old_signature, new_signature

"""Gates a model version must pass before an environment pins it. Pure: facts in, refusals out."""

from __future__ import annotations

from collections.abc import Mapping

from mlopsctl.base.config import Gates
from mlopsctl.base.registry import ModelVersion

# MLflow numbers versions from 1, so a pin of version 0 never names a real one: it records that
# no version has been promoted to the environment yet (a new environment starts there).
NOTHING_PINNED = "0"


def nothing_pinned(version: str) -> bool:
    """Whether a pinned version is the "none promoted yet" record rather than a real version."""
    return version == NOTHING_PINNED


def uncompared(gates: Gates, candidate: ModelVersion, pinned_version: str) -> str | None:
    """Why the notWorseThan gate holds without a comparison: nothing is pinned to compare with.

    None when the gate is not configured or a real version is pinned.
    """
    if gates.not_worse_than is None or not nothing_pinned(pinned_version):
        return None
    return (
        f"{candidate.model} v{candidate.version}: notWorseThan holds without a comparison: "
        f"no version is promoted here yet (pin v{NOTHING_PINNED})"
    )


def refusals(
    gates: Gates,
    candidate: ModelVersion,
    metrics: Mapping[str, float],
    has_signature: bool | None,
    pinned_metrics: Mapping[str, float] | None,
) -> list[str]:
    """Why `candidate` may not be pinned; empty when every gate holds.

    `pinned_metrics` is None when there is no pinned version to compare with (nothing promoted
    yet, or a rollback): the notWorseThan gate then holds.
    """
    reasons = []
    label = f"{candidate.model} v{candidate.version}"
    if gates.require_ready and candidate.status != "READY":
        reasons.append(f"{label} is {candidate.status or 'of unknown status'}, not READY")
    if gates.require_signature and not has_signature:
        reasons.append(f"{label} has no model signature")
    for metric, minimum in gates.min_metrics:
        if metric not in metrics:
            reasons.append(
                f"{label}: its run logged no {metric!r} metric (required >= {minimum:g})"
            )
        elif metrics[metric] < minimum:
            reasons.append(
                f"{label}: {metric} {metrics[metric]:g} is below the required {minimum:g}"
            )
    if gates.not_worse_than is not None and pinned_metrics is not None:
        metric, tolerance, higher_is_better = gates.not_worse_than
        if metric not in metrics:
            reasons.append(f"{label}: its run logged no {metric!r} metric to compare")
        elif metric not in pinned_metrics:
            # Nothing to compare with is not a pass: a gate that cannot be checked fails closed.
            reasons.append(
                f"{label}: the pinned version's run logged no {metric!r} metric, so "
                "notWorseThan cannot compare with it (the gate fails closed)"
            )
        else:
            new, old = metrics[metric], pinned_metrics[metric]
            worse_by = (old - new) if higher_is_better else (new - old)
            if worse_by > tolerance:
                reasons.append(
                    f"{label}: {metric} {new:g} is worse than the pinned version's {old:g} "
                    f"by more than {tolerance:g}"
                )
    return reasons

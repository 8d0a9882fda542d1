"""Gates a model version must pass before an environment pins it. Pure: facts in, refusals out."""

from __future__ import annotations

from collections.abc import Mapping

from mlopsctl.config import Gates
from mlopsctl.registry import ModelVersion


def refusals(
    gates: Gates,
    candidate: ModelVersion,
    metrics: Mapping[str, float],
    has_signature: bool | None,
    pinned_metrics: Mapping[str, float] | None,
) -> list[str]:
    """Why `candidate` may not be pinned; empty when every gate holds."""
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
        elif metric in pinned_metrics:
            new, old = metrics[metric], pinned_metrics[metric]
            worse_by = (old - new) if higher_is_better else (new - old)
            if worse_by > tolerance:
                reasons.append(
                    f"{label}: {metric} {new:g} is worse than the pinned version's {old:g} "
                    f"by more than {tolerance:g}"
                )
    return reasons

"""The promotion gates: facts in, refusals out, each refusal naming the version and the reason."""

from __future__ import annotations

from mlopsctl.base.config import Gates
from mlopsctl.base.registry import ModelVersion
from mlopsctl.promote.gates import NOTHING_PINNED, nothing_pinned, refusals, uncompared

READY = ModelVersion("iris", "7", "READY", "run-7", "models:/iris/7")
ACCURACY_NOT_WORSE = ("accuracy", 0.01, True)


def test_a_ready_signed_version_with_its_metrics_passes_every_gate() -> None:
    gates = Gates(min_metrics=(("accuracy", 0.9),), not_worse_than=ACCURACY_NOT_WORSE)
    assert refusals(gates, READY, {"accuracy": 0.95}, True, {"accuracy": 0.955}) == []


def test_not_ready_and_unsigned_are_refused_with_the_version_named() -> None:
    pending = ModelVersion("iris", "8", "PENDING_REGISTRATION", "run-8", "models:/iris/8")
    assert refusals(Gates(), pending, {}, False, None) == [
        "iris v8 is PENDING_REGISTRATION, not READY",
        "iris v8 has no model signature",
    ]
    unknown = ModelVersion("iris", "9", "", "run-9", "models:/iris/9")
    assert refusals(Gates(require_signature=False), unknown, {}, None, None) == [
        "iris v9 is of unknown status, not READY"
    ]


def test_gates_switched_off_refuse_nothing() -> None:
    failed = ModelVersion("iris", "7", "FAILED_REGISTRATION", "run-7", "models:/iris/7")
    assert (
        refusals(Gates(require_ready=False, require_signature=False), failed, {}, None, None) == []
    )


def test_a_minimum_refuses_a_missing_or_lower_metric_and_accepts_an_equal_one() -> None:
    gates = Gates(min_metrics=(("accuracy", 0.9), ("f1", 0.8)))
    assert refusals(gates, READY, {"accuracy": 0.9, "f1": 0.8}, True, None) == []
    assert refusals(gates, READY, {"accuracy": 0.85}, True, None) == [
        "iris v7: accuracy 0.85 is below the required 0.9",
        "iris v7: its run logged no 'f1' metric (required >= 0.8)",
    ]


def test_not_worse_than_allows_the_tolerance_and_refuses_beyond_it() -> None:
    gates = Gates(not_worse_than=ACCURACY_NOT_WORSE)
    assert refusals(gates, READY, {"accuracy": 0.905}, True, {"accuracy": 0.91}) == []
    assert refusals(gates, READY, {"accuracy": 0.88}, True, {"accuracy": 0.91}) == [
        "iris v7: accuracy 0.88 is worse than the pinned version's 0.91 by more than 0.01"
    ]


def test_not_worse_than_for_a_metric_where_lower_is_better() -> None:
    gates = Gates(not_worse_than=("loss", 0.0, False))
    assert refusals(gates, READY, {"loss": 0.2}, True, {"loss": 0.3}) == []
    assert refusals(gates, READY, {"loss": 0.4}, True, {"loss": 0.3}) == [
        "iris v7: loss 0.4 is worse than the pinned version's 0.3 by more than 0"
    ]


def test_not_worse_than_fails_closed_when_either_side_lacks_the_metric() -> None:
    gates = Gates(not_worse_than=ACCURACY_NOT_WORSE)
    assert refusals(gates, READY, {}, True, {"accuracy": 0.9}) == [
        "iris v7: its run logged no 'accuracy' metric to compare"
    ]
    [reason] = refusals(gates, READY, {"accuracy": 0.9}, True, {})
    assert "the pinned version's run logged no 'accuracy' metric" in reason
    assert "fails closed" in reason


def test_not_worse_than_holds_when_there_is_nothing_pinned_to_compare_with() -> None:
    gates = Gates(not_worse_than=ACCURACY_NOT_WORSE)
    assert refusals(gates, READY, {"accuracy": 0.1}, True, None) == []
    assert nothing_pinned(NOTHING_PINNED) and not nothing_pinned("1")
    assert uncompared(gates, READY, NOTHING_PINNED) == (
        "iris v7: notWorseThan holds without a comparison: no version is promoted here yet (pin v0)"
    )
    assert uncompared(gates, READY, "3") is None
    assert uncompared(Gates(), READY, NOTHING_PINNED) is None

"""The model review: which pins moved, the facts of both versions, and the wording a reviewer
reads in `mlopsctl diff` and in the promoter's pull requests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.inventory import LocatedPin
from mlopsctl.base.markers import Pin
from mlopsctl.base.model_review import (
    PinMove,
    VersionFacts,
    facts,
    markdown,
    metric_rows,
    pin_moves,
    signature_verdict,
    text,
    with_facts,
)
from mlopsctl.base.registry import ModelVersion

SERVER = "overlays/staging/model-server/kustomization.yaml"
FRONTEND = "overlays/staging/streamlit/kustomization.yaml"
INPUTS = '[{"name": "sepal_length", "type": "double"}, {"name": "petal_length", "type": "double"}]'


def pinned(file: str, version: str, follows: str = "iris@champion") -> LocatedPin:
    return LocatedPin(file, Pin("model", follows, 1, 2, version))


class FakeRegistry:
    """Versions 3 and 4 of iris, with metrics and signatures; anything else is missing."""

    base_url = "http://registry.test"

    def __init__(self, failing: bool = False, signatures_served: bool = True) -> None:
        self.failing = failing
        self.signatures_served = signatures_served

    def version(self, model: str, version: str) -> ModelVersion | None:
        if self.failing:
            raise MlopsctlError("registry unreachable")
        if version not in ("3", "4"):
            return None
        return ModelVersion(model, version, "READY", f"run-{version}", f"models:/{model}/{version}")

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return {"run-3": {"accuracy": 0.9, "f1": 0.8}, "run-4": {"accuracy": 0.95}}[run_id]

    def signature(self, model: str, version: str) -> dict[str, Any] | None:
        if not self.signatures_served:
            raise MlopsctlError("no MLmodel")
        return (
            {"inputs": INPUTS} if version == "3" else {"inputs": INPUTS.replace("petal", "sepal_w")}
        )


def test_pin_moves_groups_the_files_of_one_move_and_skips_unmoved_pins() -> None:
    before = [pinned(SERVER, "3"), pinned(FRONTEND, "3"), pinned("overlays/prod/a.yaml", "1")]
    after = [pinned(SERVER, "4"), pinned(FRONTEND, "4"), pinned("overlays/prod/a.yaml", "1")]
    assert pin_moves(before, after) == [
        PinMove("staging", "iris", "champion", "3", "4", (SERVER, FRONTEND))
    ]
    [new] = pin_moves([], [pinned(SERVER, "4")])
    assert (new.old, new.new) == ("", "4")
    [gone] = pin_moves([pinned(SERVER, "3")], [])
    assert (gone.old, gone.new) == ("3", "")


def test_facts_record_problems_instead_of_raising() -> None:
    registry = FakeRegistry()
    three = facts(registry, "iris", "3")
    assert (three.exists, three.run_id, dict(three.metrics)) == (
        True,
        "run-3",
        {"accuracy": 0.9, "f1": 0.8},
    )
    assert facts(registry, "iris", "0").problem == "no version pinned"
    assert facts(registry, "iris", "9").problem == "not in the registry"
    unreachable = facts(FakeRegistry(failing=True), "iris", "3")
    assert (unreachable.exists, unreachable.problem) == (False, "registry unreachable")
    assert not facts(FakeRegistry(signatures_served=False), "iris", "3").signature_known


def test_signature_verdicts() -> None:
    def side(version: str, signature: Mapping[str, Any] | None) -> VersionFacts:
        return VersionFacts(version, signature=signature)

    same = {"inputs": INPUTS}
    assert signature_verdict(side("3", same), side("4", same)) == "unchanged"
    assert signature_verdict(side("3", None), side("4", None)) == "neither version has one"
    assert signature_verdict(side("3", None), side("4", same)) == "**added** (v3 had none)"
    assert signature_verdict(side("3", same), side("4", None)) == "**removed** (v4 has none)"
    retyped = {"inputs": INPUTS.replace('"double"}]', '"float"}]')}
    assert signature_verdict(side("3", same), side("4", retyped)) == (
        "**changed**: inputs: `petal_length` double → float"
    )
    unknown = VersionFacts("4", signature_known=False)
    assert signature_verdict(side("3", same), unknown).startswith("unknown")


def test_markdown_and_text_show_metrics_with_deltas_and_the_signature_change() -> None:
    before = [pinned(SERVER, "3")]
    [move] = with_facts(pin_moves(before, [pinned(SERVER, "4")]), FakeRegistry(), "unused")
    body = markdown([move])
    assert body.startswith("#### Model `iris` in staging: v3 → v4 (follows `@champion`)")
    assert f"Pinned in `{SERVER}`." in body
    assert "| accuracy | 0.9 | 0.95 | +0.05 |" in body
    assert "| f1 | 0.8 | - | - |" in body
    assert "Signature: **changed**: inputs: +`sepal_w_length`, -`petal_length`." in body
    terminal = text([move])
    assert terminal.startswith("model iris in staging: v3 → v4 (follows @champion)")
    assert "accuracy  0.9  0.95  +0.05" in terminal
    assert "signature: changed: inputs: +sepal_w_length, -petal_length" in terminal
    assert markdown([]) == "" and text([]) == ""


def test_without_a_registry_the_review_says_why_there_are_no_metrics() -> None:
    moves = pin_moves([pinned(SERVER, "3")], [pinned(SERVER, "4")])
    [move] = with_facts(moves, None, "no --registry given")
    assert "_Metrics not shown: no --registry given_" in markdown([move])
    assert "metrics not shown: no --registry given" in text([move])


def signature_of(*columns: tuple[str, str]) -> dict[str, str]:
    return {"inputs": json.dumps([{"name": name, "type": kind} for name, kind in columns])}


def test_signature_verdicts_name_columns_added_removed_and_retyped():
    def verdict(old: dict | None, new: dict | None, known: bool = True) -> str:
        return signature_verdict(
            VersionFacts("1", signature=old, signature_known=known),
            VersionFacts("2", signature=new, signature_known=known),
        )

    same = signature_of(("x", "double"))
    assert verdict(same, same) == "unchanged"
    assert verdict(None, same) == "**added** (v1 had none)"
    assert verdict(same, None) == "**removed** (v2 has none)"
    assert verdict(same, same, known=False).startswith("unknown")
    assert (
        verdict(
            signature_of(("x", "double"), ("y", "double")),
            signature_of(("x", "long"), ("z", "double")),
        )
        == "**changed**: inputs: +`z`, -`y`, `x` double → long"
    )


def test_metric_rows_show_deltas_and_gaps():
    before = VersionFacts("3", metrics={"accuracy": 0.9, "loss": 0.3})
    after = VersionFacts("5", metrics={"accuracy": 0.95, "f1": 0.9})
    assert metric_rows(before, after) == [
        ("accuracy", "0.9", "0.95", "+0.05"),
        ("f1", "-", "0.9", "-"),
        ("loss", "0.3", "-", "-"),
    ]

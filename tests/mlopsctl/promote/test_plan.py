"""The planner's registry reads (issue 15): each alias read once per plan, all of them fetched
together, every other read once per key; nothing carried over to the next plan; a failed read
fails every pin that needs it, and only those.

A fake registry, so each read can be counted and each answer chosen; the repository's own
mlopsctl.yaml gives the gates (local commits; staging and production open pull requests, and
production compares with the pinned version).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from mlopsctl.base.config import Config, load_config
from mlopsctl.base.errors import RegistryError
from mlopsctl.base.inventory import LocatedPin
from mlopsctl.base.markers import Pin
from mlopsctl.base.registry import ModelVersion
from mlopsctl.promote.edits import ModelChange
from mlopsctl.promote.plan import plan_models
from tests.support.paths import REPOSITORY

WAIT_SECONDS = 20
SIGNATURE = {"inputs": '[{"type": "double", "name": "x"}]'}


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(REPOSITORY)


def located(environment: str, component: str, follows: str, value: str) -> LocatedPin:
    return LocatedPin(
        f"overlays/{environment}/{component}/kustomization.yaml", Pin("model", follows, 1, 2, value)
    )


def version(model: str, number: str) -> ModelVersion:
    return ModelVersion(
        model, number, "READY", f"run-{model}-{number}", f"models:/{model}/{number}"
    )


class ScriptedRegistry:
    """Answers each alias read with the next version of its script (the alias moves between
    reads), counts every read by key, and may hold alias reads at a barrier or fail them."""

    base_url = "fake://registry"

    def __init__(
        self,
        scripts: dict[tuple[str, str], list[str]],
        failing: dict[tuple[str, str], Exception] | None = None,
        barrier: threading.Barrier | None = None,
    ) -> None:
        self.scripts = scripts
        self.failing = failing or {}
        self.barrier = barrier
        self.reads: Counter[tuple[str, ...]] = Counter()
        self.lock = threading.Lock()

    def _count(self, *key: str) -> int:
        with self.lock:
            self.reads[key] += 1
            return self.reads[key]

    def version_by_alias(self, model: str, alias: str) -> ModelVersion | None:
        turn = self._count("alias", model, alias)
        if self.barrier is not None:
            self.barrier.wait(WAIT_SECONDS)  # BrokenBarrierError if the reads are serial
        if (model, alias) in self.failing:
            raise self.failing[(model, alias)]
        script = self.scripts[(model, alias)]
        return version(model, script[min(turn, len(script)) - 1])

    def version(self, model: str, number: str) -> ModelVersion | None:
        self._count("version", model, number)
        return version(model, number)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        self._count("metrics", run_id)
        return {"accuracy": 0.95}

    def signature(self, model: str, number: str) -> dict[str, Any] | None:
        self._count("signature", model, number)
        return SIGNATURE

    def set_alias(self, model: str, alias: str, number: str) -> None:
        raise AssertionError("planning moves no alias")


def changes(plan: Any) -> list[tuple[str, str, str]]:
    return [
        (edit.file.split("/")[2], edit.model, edit.new.version)
        for edit in plan.edits
        if isinstance(edit, ModelChange)
    ]


def test_two_pins_following_one_alias_read_it_once_and_get_one_answer(config: Config):
    pins = [
        located("local", "model-server", "iris@challenger", "1"),
        located("local", "streamlit", "iris@challenger", "1"),
    ]
    # The alias moves after the first read: a second read would plan the two files apart.
    registry = ScriptedRegistry({("iris", "challenger"): ["2", "3"]})

    plan = plan_models(pins, registry, config)

    assert changes(plan) == [("model-server", "iris", "2"), ("streamlit", "iris", "2")]
    assert registry.reads[("alias", "iris", "challenger")] == 1
    assert plan.failures == []


def test_every_other_read_is_made_once_per_key_within_a_plan(config: Config):
    # Production: signatures, metrics and the pinned version to compare with, for two files.
    pins = [
        located("production", "model-server", "iris@champion", "1"),
        located("production", "streamlit", "iris@champion", "1"),
    ]
    registry = ScriptedRegistry({("iris", "champion"): ["2"]})

    plan = plan_models(pins, registry, config)

    assert changes(plan) == [("model-server", "iris", "2"), ("streamlit", "iris", "2")]
    assert registry.reads == {
        ("alias", "iris", "champion"): 1,
        ("metrics", "run-iris-2"): 1,
        ("metrics", "run-iris-1"): 1,
        ("version", "iris", "1"): 1,
        ("signature", "iris", "2"): 1,
        ("signature", "iris", "1"): 1,  # the pull request shows both signatures
    }


def test_no_answer_is_carried_over_to_the_next_plan(config: Config):
    pins = [
        located("local", "model-server", "iris@challenger", "1"),
        located("local", "streamlit", "iris@challenger", "1"),
    ]
    registry = ScriptedRegistry({("iris", "challenger"): ["2", "3"]})

    first = plan_models(pins, registry, config)
    # As the landing plans again after a rejected push: the alias has moved since.
    second = plan_models(pins, registry, config)

    assert {change[2] for change in changes(first)} == {"2"}
    assert {change[2] for change in changes(second)} == {"3"}
    assert registry.reads[("alias", "iris", "challenger")] == 2  # once per plan
    assert registry.reads[("metrics", "run-iris-3")] == 1  # and the new version's reads anew


def test_the_aliases_of_a_plan_are_fetched_together(config: Config):
    models = [f"model-{index}" for index in range(4)]
    pins = [located("local", "model-server", f"{model}@challenger", "1") for model in models]
    # Each alias read waits at the barrier until every other has started: serial reads break it.
    barrier = threading.Barrier(len(models))
    registry = ScriptedRegistry({(model, "challenger"): ["2"] for model in models}, barrier=barrier)

    plan = plan_models(pins, registry, config)

    assert not barrier.broken
    assert plan.failures == []
    assert [change[1] for change in changes(plan)] == models


def test_a_failed_alias_read_fails_each_pin_following_it_and_no_other(config: Config):
    pins = [
        located("local", "model-server", "broken@challenger", "1"),
        located("local", "model-server", "iris@challenger", "1"),
        located("local", "streamlit", "broken@challenger", "1"),
    ]
    error = RegistryError("MLflow at fake://registry is unreachable (reading alias)")
    registry = ScriptedRegistry(
        {("iris", "challenger"): ["2"]}, failing={("broken", "challenger"): error}
    )

    plan = plan_models(pins, registry, config)

    assert changes(plan) == [("model-server", "iris", "2")]
    assert [(failure.environment, failure.key) for failure in plan.failures] == [
        ("local", "broken"),
        ("local", "broken"),
    ]
    for failure in plan.failures:
        assert failure.reason == f"broken@challenger: {error}"
        assert failure.exit_code == RegistryError.exit_code
    assert registry.reads[("alias", "broken", "challenger")] == 1  # the failure is its answer


class HeldReads(ScriptedRegistry):
    """Holds every read after the alias reads at a barrier: version, metrics and signature reads
    made one after another break it."""

    def __init__(self, scripts: dict[tuple[str, str], list[str]], parties: int) -> None:
        super().__init__(scripts)
        self.held = threading.Barrier(parties)

    def version(self, model: str, number: str) -> ModelVersion | None:
        self.held.wait(WAIT_SECONDS)
        return super().version(model, number)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        if run_id.endswith("-2"):  # the new versions' runs, read with the first round
            self.held.wait(WAIT_SECONDS)
        return super().run_metrics(run_id)

    def signature(self, model: str, number: str) -> dict[str, Any] | None:
        self.held.wait(WAIT_SECONDS)
        return super().signature(model, number)


def test_the_reads_after_the_aliases_are_fetched_together_too(config: Config):
    """Once the aliases are known, each moving pin's new run, signature and pinned version are
    read at once (local requires a signature), not one pin and one read after another."""
    models = ["first", "second"]
    pins = [located("local", "model-server", f"{model}@challenger", "1") for model in models]
    # Per model: the pinned version, the new run's metrics and the new version's signature.
    registry = HeldReads({(model, "challenger"): ["2"] for model in models}, parties=6)

    plan = plan_models(pins, registry, config)

    assert not registry.held.broken
    assert plan.failures == []
    assert [change[1] for change in changes(plan)] == models
    # Still one read per key: the old runs' metrics came in a second round.
    assert all(count == 1 for count in registry.reads.values()), registry.reads
    assert registry.reads[("metrics", "run-first-1")] == 1

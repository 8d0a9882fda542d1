"""mlopsctl.promote.registry_reads: concurrent reads that keep each key's answer, and the
answers one plan remembers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from mlopsctl.base.registry import ModelVersion
from mlopsctl.promote.registry_reads import PlanAnswers, read_all, read_each


def a_version(model: str, version: str) -> ModelVersion:
    return ModelVersion(model, version, "READY", f"run-{version}", f"models:/{model}/{version}")


class FakeRegistry:
    """Aliases and versions in dicts; every read counted; keys listed in `failing` raise."""

    base_url = "http://registry.test"

    def __init__(self) -> None:
        self.aliases: dict[tuple[str, str], str] = {}
        self.failing: set[Any] = set()
        self.reads: list[tuple[str, Any]] = []
        self.writes: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def _count(self, kind: str, key: Any) -> None:
        with self._lock:
            self.reads.append((kind, key))
        if key in self.failing:
            raise RuntimeError(f"registry refused {key}")

    def version_by_alias(self, model: str, alias: str) -> ModelVersion | None:
        self._count("alias", (model, alias))
        version = self.aliases.get((model, alias))
        return None if version is None else a_version(model, version)

    def version(self, model: str, version: str) -> ModelVersion | None:
        self._count("version", (model, version))
        return a_version(model, version)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        self._count("metrics", run_id)
        return {"accuracy": 0.9}

    def signature(self, model: str, version: str) -> dict[str, Any] | None:
        self._count("signature", (model, version))
        return {"inputs": model}

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.writes.append((model, alias, version))
        self.aliases[(model, alias)] = version


def fail_on(failing: set[str]) -> Callable[[str], str]:
    def read(key: str) -> str:
        if key in failing:
            raise ValueError(f"no {key}")
        return key.upper()

    return read


@pytest.mark.parametrize("concurrency", [1, 4])
def test_read_each_gives_every_key_its_value_or_its_own_error(concurrency: int) -> None:
    answers = read_each(["a", "b", "c", "b"], fail_on({"b"}), concurrency=concurrency)

    assert list(answers) == ["a", "b", "c"]
    assert answers["a"].get() == "A"
    assert answers["c"].get() == "C"
    assert str(answers["b"].error) == "no b"
    with pytest.raises(ValueError, match="no b"):
        answers["b"].get()


@pytest.mark.parametrize("concurrency", [1, 4])
def test_read_all_returns_values_in_key_order(concurrency: int) -> None:
    assert read_all(["c", "a", "b"], fail_on(set()), concurrency=concurrency) == {
        "c": "C",
        "a": "A",
        "b": "B",
    }


@pytest.mark.parametrize("concurrency", [1, 4])
def test_read_all_raises_the_first_failing_key_in_key_order(concurrency: int) -> None:
    with pytest.raises(ValueError, match="no b"):
        read_all(["a", "b", "c", "d"], fail_on({"d", "b"}), concurrency=concurrency)


def test_read_all_serially_reads_nothing_after_a_failure() -> None:
    read_keys: list[str] = []

    def read(key: str) -> str:
        read_keys.append(key)
        if key == "b":
            raise ValueError("no b")
        return key

    with pytest.raises(ValueError):
        read_all(["a", "b", "c"], read, concurrency=1)
    assert read_keys == ["a", "b"]


def test_plan_answers_reads_each_alias_once_and_keeps_its_answer() -> None:
    registry = FakeRegistry()
    registry.aliases[("iris", "production")] = "3"
    answers = PlanAnswers(registry)

    first = answers.version_by_alias("iris", "production")
    registry.aliases[("iris", "production")] = "4"  # moved while the plan is made
    second = answers.version_by_alias("iris", "production")

    assert first is not None and first.version == "3"
    assert second == first
    assert registry.reads == [("alias", ("iris", "production"))]
    assert answers.base_url == "http://registry.test"


def test_plan_answers_keeps_an_error_and_raises_it_again_without_reading() -> None:
    registry = FakeRegistry()
    registry.failing.add(("iris", "1"))
    answers = PlanAnswers(registry)

    for _ in range(2):
        with pytest.raises(RuntimeError, match="registry refused"):
            answers.version("iris", "1")
    assert registry.reads == [("version", ("iris", "1"))]
    assert answers.known_version("iris", "1") is None


def test_prefetch_aliases_reads_only_unknown_keys_and_keeps_failures_per_key() -> None:
    registry = FakeRegistry()
    registry.aliases[("iris", "staging")] = "2"
    registry.failing.add(("wine", "staging"))
    answers = PlanAnswers(registry)
    answers.version_by_alias("iris", "staging")

    answers.prefetch_aliases([("iris", "staging"), ("wine", "staging"), ("iris", "production")])

    assert sorted(registry.reads) == [
        ("alias", ("iris", "production")),
        ("alias", ("iris", "staging")),
        ("alias", ("wine", "staging")),
    ]
    known = answers.known_alias("iris", "staging")
    assert known is not None and known.version == "2"
    assert answers.known_alias("iris", "production") is None  # answered: no such alias
    assert answers.known_alias("wine", "staging") is None  # failed
    assert answers.known_alias("never", "asked") is None
    with pytest.raises(RuntimeError, match="wine"):
        answers.version_by_alias("wine", "staging")
    assert len(registry.reads) == 3


def test_prefetch_reads_versions_metrics_and_signatures_not_yet_known() -> None:
    registry = FakeRegistry()
    registry.failing.add("run-bad")
    answers = PlanAnswers(registry)
    answers.run_metrics("run-1")

    answers.prefetch(
        versions=[("iris", "1")],
        metrics=["run-1", "run-bad"],
        signatures=[("iris", "1")],
    )

    assert sorted(registry.reads, key=repr) == sorted(
        [
            ("metrics", "run-1"),
            ("version", ("iris", "1")),
            ("metrics", "run-bad"),
            ("signature", ("iris", "1")),
        ],
        key=repr,
    )
    assert answers.known_version("iris", "1") == a_version("iris", "1")
    assert answers.signature("iris", "1") == {"inputs": "iris"}
    assert answers.run_metrics("run-1") == {"accuracy": 0.9}
    with pytest.raises(RuntimeError, match="run-bad"):
        answers.run_metrics("run-bad")
    assert len(registry.reads) == 4


def test_set_alias_writes_and_forgets_the_alias_so_it_is_read_again() -> None:
    registry = FakeRegistry()
    registry.aliases[("iris", "production")] = "3"
    answers = PlanAnswers(registry)
    answers.version_by_alias("iris", "production")

    answers.set_alias("iris", "production", "5")
    after = answers.version_by_alias("iris", "production")

    assert registry.writes == [("iris", "production", "5")]
    assert after is not None and after.version == "5"
    assert registry.reads.count(("alias", ("iris", "production"))) == 2

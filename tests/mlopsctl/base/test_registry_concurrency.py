"""`MlflowRegistry` called from several threads (issue 15): calls that share their HTTP settings
run at once; a call with other settings never overlaps them, and each request is sent with the
settings of its own call; `calls` stays exact.

The servers here are loopback stand-ins that hold requests until the test lets them go; what a
real MLflow answers to concurrent reads is the last test. Every wait is bounded: a regression
fails on a timeout, never hangs, and nothing here asserts on how long anything took.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from mlopsctl.base import registry as registry_module
from mlopsctl.base.registry import RETRIES_VARIABLE, TIMEOUT_VARIABLE, MlflowRegistry
from tests.support.loopback import QuietHandler, serving
from tests.support.mlflow_fixtures import MlflowServer

WAIT_SECONDS = 20
NOT_FOUND = b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such version"}'


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


@dataclass
class Arrival:
    model: str
    retries: str | None  # MLFLOW_HTTP_REQUEST_MAX_RETRIES as the request found it
    timeout: str | None
    in_flight: frozenset[str]  # the other requests under way when it arrived


@dataclass
class HeldServer:
    """Answers "not found" to every read, but only once the test releases the read's model."""

    url: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    in_flight: set[str] = field(default_factory=set)
    released: dict[str, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def release(self, model: str) -> None:
        self.gate(model).set()

    def gate(self, model: str) -> threading.Event:
        with self.lock:
            return self.released.setdefault(model, threading.Event())

    def arrived(self, model: str) -> bool:
        with self.lock:
            return any(arrival.model == model for arrival in self.arrivals)


@pytest.fixture
def held_server() -> Iterator[HeldServer]:
    state = HeldServer()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            model = self.path.split("name=", 1)[1].split("&", 1)[0]
            with state.lock:
                # The stand-in runs in this process: it sees os.environ as MLflow's client
                # read it for this request.
                state.arrivals.append(
                    Arrival(
                        model,
                        os.environ.get(RETRIES_VARIABLE),
                        os.environ.get(TIMEOUT_VARIABLE),
                        frozenset(state.in_flight),
                    )
                )
                state.in_flight.add(model)
            try:
                state.gate(model).wait(WAIT_SECONDS)
                self.reply(404, NOT_FOUND)
            finally:
                with state.lock:
                    state.in_flight.discard(model)

    with serving(Handler) as url:
        state.url = url
        yield state
        for event in list(state.released.values()):
            event.set()


def test_calls_with_the_same_settings_are_under_way_at_once(held_server: HeldServer):
    registry = MlflowRegistry(held_server.url, attempts=1)
    models = [f"model-{index}" for index in range(6)]
    with ThreadPoolExecutor(len(models)) as pool:
        answers = [pool.submit(registry.version, model, "1") for model in models]
        # Each request is held until the test lets it go: were the calls serial, the second
        # would never arrive while the first is held, and this would time out.
        eventually(lambda: all(held_server.arrived(model) for model in models), "all arrived")
        for model in models:
            held_server.release(model)
        assert [answer.result(WAIT_SECONDS) for answer in answers] == [None] * len(models)
    assert max(len(arrival.in_flight) for arrival in held_server.arrivals) == len(models) - 1
    assert registry.calls == len(models)


def test_a_call_with_other_settings_waits_for_the_batch_and_the_batch_for_it(
    held_server: HeldServer,
):
    reads = MlflowRegistry(held_server.url, attempts=3, timeout_seconds=7)
    # Other settings, as a webhook create (one attempt) or `mlopsctl diff` (a shorter timeout).
    other = MlflowRegistry(held_server.url, attempts=1, timeout_seconds=2)
    batch = ["read-1", "read-2", "read-3"]
    with ThreadPoolExecutor(5) as pool:
        running = [pool.submit(reads.version, model, "1") for model in batch]
        eventually(lambda: all(held_server.arrived(model) for model in batch), "batch arrived")
        lone = pool.submit(other.version, "other", "1")
        eventually(lambda: len(registry_module._settings_gate._waiting) == 1, "other queued")
        # A newcomer with the batch's settings queues behind the waiting call: a steady stream
        # of reads cannot keep it out.
        late = pool.submit(reads.version, "read-late", "1")
        eventually(lambda: len(registry_module._settings_gate._waiting) == 2, "late queued")
        assert not held_server.arrived("other") and not held_server.arrived("read-late")

        for model in batch:
            held_server.release(model)
        eventually(lambda: held_server.arrived("other"), "the other call arrived")
        assert not held_server.arrived("read-late")  # it waits for the other call in turn
        held_server.release("other")
        held_server.release("read-late")
        for answer in [*running, lone, late]:
            assert answer.result(WAIT_SECONDS) is None

    by_model = {arrival.model: arrival for arrival in held_server.arrivals}
    assert by_model["other"].in_flight == frozenset()  # alone on the wire
    assert by_model["read-late"].in_flight == frozenset()
    for model in [*batch, "read-late"]:
        assert (by_model[model].retries, by_model[model].timeout) == ("2", "7")
    assert (by_model["other"].retries, by_model["other"].timeout) == ("0", "2")


def test_settings_are_written_again_when_something_else_changed_them(held_server: HeldServer):
    registry = MlflowRegistry(held_server.url, attempts=3)
    held_server.release("first")
    held_server.release("second")
    assert registry.version("first", "1") is None
    # What a test's monkeypatch or the operator's own code may do between two calls.
    os.environ[RETRIES_VARIABLE] = "9"
    assert registry.version("second", "1") is None
    assert [arrival.retries for arrival in held_server.arrivals] == ["2", "2"]


def test_a_nested_call_with_the_same_settings_does_not_wait_for_a_queued_one(
    held_server: HeldServer,
):
    registry = MlflowRegistry(held_server.url, attempts=2)
    other = MlflowRegistry(held_server.url, attempts=1)
    held_server.release("inner")
    held_server.release("other")
    queued: list[object] = []

    def outer(_client: object) -> str | None:
        queued.append(threading.Thread(target=other.version, args=("other", "1")))
        queued[0].start()  # type: ignore[attr-defined]
        eventually(lambda: len(registry_module._settings_gate._waiting) == 1, "other queued")
        answer = registry.version("inner", "1")  # would wait for `other`, which waits for us
        return "nested" if answer is None else "unexpected"

    assert registry._call("outer", outer) == "nested"
    queued[0].join(WAIT_SECONDS)  # type: ignore[attr-defined]
    assert [arrival.model for arrival in held_server.arrivals] == ["inner", "other"]


def test_the_call_count_is_exact_under_threads():
    registry = MlflowRegistry("http://127.0.0.1:9")
    # Switch threads as often as the interpreter allows: a lost `calls += 1` would show.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(8) as pool:
            done = list(
                pool.map(
                    lambda index: registry._call("counting", lambda _client: index), range(4000)
                )
            )
    finally:
        sys.setswitchinterval(previous)
    assert done == list(range(4000))
    assert registry.calls == 4000


def test_concurrent_reads_of_a_real_mlflow_answer_as_serial_ones(mlflow_server: MlflowServer):
    models = [f"concurrent-{index}" for index in range(6)]
    for model in models:
        mlflow_server.register(model, {"accuracy": 0.9}, alias="challenger")
    serial = MlflowRegistry(mlflow_server.url)
    expected = [
        serial.version_by_alias(model, alias)
        for model in models
        for alias in ("challenger", "champion")
    ]
    concurrent = MlflowRegistry(mlflow_server.url)
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda key: concurrent.version_by_alias(*key),
                [(model, alias) for model in models for alias in ("challenger", "champion")],
            )
        )
    assert answers == expected
    assert [answer is None for answer in answers] == [False, True] * len(models)
    assert concurrent.calls == serial.calls == 2 * len(models)

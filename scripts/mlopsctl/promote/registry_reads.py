"""Registry reads made concurrently, a bounded few at a time, and one plan's answers kept.

`status` asks the registry once per model and alias: 4,000 reads for 2,000 models in three
environments, each a round trip that mostly waits on the server. Made one after another they
take the sum of those waits; made a few at a time, the waits overlap. The reads go through the
`Registry` protocol, so they work with any registry (the tests' fakes included): the only
thing asked of one is that it can be called from several threads, as `MlflowRegistry` can.

A plan (`plan.plan_models`) reads through `PlanAnswers`: each alias once, all of them fetched
together up front, and every other read once per key. It lives for that one plan only: the
landing plans again after a rejected push precisely to see what the registry says now.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, Generic, TypeVar

from mlopsctl.base.registry import ModelVersion, Registry

# How many reads are under way at once, measured with `status` at 2,000 models x 3 environments
# (4,000 alias reads; tests/benchmarks/promotion.py) in two regimes:
# - the server's own time per read bounds it: the tests' MLflow (one uvicorn worker, sqlite) on
#   the same 2 cores as the client spends 4-5 ms of its one core per read whatever the client
#   does. Medians of 3: 1 at a time 20.7 s, 2 19.3 s, 4 20.7 s, 8 22.5 s: overlapping helps
#   little, and 8 requests contending for that server's one interpreter cost it ~10%;
# - each read waits on something else than the server's CPU (a network's round trip, replicas
#   behind a Service; here MLflow run with `--workers 2`, where a kept-alive request stalls
#   48 ms): 1 took 213 s, 2 106 s, 4 55 s, 8 30 s.
# A registry across a network is the second kind, and where the bound matters: 8. Not more:
# each thread keeps a kept-alive connection of MLflow's HTTP pool, which holds 10 per host
# (MLFLOW_HTTP_POOL_MAXSIZE); past that every extra request opens a connection and urllib3
# throws it away after the answer.
CONCURRENT_READS = 8

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class Answer(Generic[Value]):
    """What one read gave: its value, or the error it raised, raised again by `get()`."""

    __slots__ = ("_error", "_value")

    def __init__(self, value: Value | None = None, error: BaseException | None = None) -> None:
        self._value = value
        self._error = error

    @property
    def error(self) -> BaseException | None:
        return self._error

    def get(self) -> Value:
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set whenever no error is


def _answer(read: Callable[[Key], Value], key: Key) -> Answer[Value]:
    try:
        return Answer(read(key))
    except Exception as error:
        return Answer(error=error)


def _read(
    keys: Iterable[Key],
    read: Callable[[Key], Value],
    concurrency: int,
    stop_at_first_failure: bool,
) -> dict[Key, Answer[Value]]:
    unique = list(dict.fromkeys(keys))
    if len(unique) <= 1 or concurrency <= 1:
        answers: dict[Key, Answer[Value]] = {}
        for key in unique:
            answers[key] = _answer(read, key)
            if stop_at_first_failure and answers[key].error is not None:
                break
        return answers
    executor = ThreadPoolExecutor(
        max_workers=min(concurrency, len(unique)), thread_name_prefix="registry-read"
    )
    try:
        # Submitted in key order and started in that order: when reads stop at a failure,
        # every key before the failed one has been read.
        futures: dict[Key, Future[Value]] = {key: executor.submit(read, key) for key in unique}
        if stop_at_first_failure:
            wait(futures.values(), return_when=FIRST_EXCEPTION)
            for future in futures.values():
                future.cancel()  # only those not yet started: the others end by their timeouts
        wait(futures.values())
    finally:
        # Without waiting: after an interrupt (Ctrl-C) nothing more starts, and what is under way
        # ends by its own timeout.
        executor.shutdown(wait=False, cancel_futures=True)
    return {
        key: Answer(error=future.exception())
        if future.exception() is not None
        else Answer(future.result())
        for key, future in futures.items()
        if not future.cancelled()
    }


def read_each(
    keys: Iterable[Key], read: Callable[[Key], Value], concurrency: int = CONCURRENT_READS
) -> dict[Key, Answer[Value]]:
    """Each key read once, `concurrency` at a time; its value or its error, by key in order.

    One key's failure does not stop the others: the caller decides what it fails."""
    return _read(keys, read, concurrency, stop_at_first_failure=False)


def read_all(
    keys: Iterable[Key], read: Callable[[Key], Value], concurrency: int = CONCURRENT_READS
) -> dict[Key, Value]:
    """Each key read once, `concurrency` at a time; by key, in order.

    A failure ends it as it ended reads made one after another: no read starts after it (those
    under way finish), and the error raised is that of the first key, in key order, whose read
    failed, which is the one a serial loop would have met first."""
    answers = _read(keys, read, concurrency, stop_at_first_failure=True)
    for answer in answers.values():
        if answer.error is not None:
            raise answer.error
    return {key: answer.get() for key, answer in answers.items()}


class PlanAnswers:
    """The registry as one plan sees it: each read made once per key, its answer (or its
    error) kept and given again to every pin that asks, so two pins following one alias get
    one answer even if the alias moves while the plan is made.

    Made afresh for each plan and dropped after it; never shared between plans.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.base_url = registry.base_url
        self._aliases: dict[tuple[str, str], Answer[ModelVersion | None]] = {}
        self._versions: dict[tuple[str, str], Answer[ModelVersion | None]] = {}
        self._metrics: dict[str, Answer[dict[str, float]]] = {}
        self._signatures: dict[tuple[str, str], Answer[dict[str, Any] | None]] = {}

    def prefetch_aliases(self, keys: Iterable[tuple[str, str]]) -> None:
        """Reads every (model, alias) not yet known, concurrently; a failed read is kept as the
        answer of that alias alone."""
        wanted = [key for key in dict.fromkeys(keys) if key not in self._aliases]
        self._aliases.update(read_each(wanted, lambda key: self.registry.version_by_alias(*key)))

    def prefetch(
        self,
        versions: Iterable[tuple[str, str]] = (),
        metrics: Iterable[str] = (),
        signatures: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Reads every version, run's metrics and signature not yet known, concurrently (the
        reads a plan makes once it knows where each alias points); a failure is kept as the
        answer of its key alone, as a read made when asked would have failed."""
        stores: dict[str, dict[Any, Any]] = {
            "version": self._versions,
            "metrics": self._metrics,
            "signature": self._signatures,
        }
        asked: tuple[tuple[str, Iterable[Any]], ...] = (
            ("version", versions),
            ("metrics", metrics),
            ("signature", signatures),
        )
        wanted = [(kind, key) for kind, keys in asked for key in keys if key not in stores[kind]]
        for (kind, key), answer in read_each(wanted, self._read_one).items():
            stores[kind][key] = answer

    def _read_one(self, read: tuple[str, Any]) -> Any:
        kind, key = read
        if kind == "version":
            return self.registry.version(*key)
        if kind == "metrics":
            return self.registry.run_metrics(key)
        return self.registry.signature(*key)

    def known_alias(self, model: str, alias: str) -> ModelVersion | None:
        """Where the alias points, if it was read and answered; None otherwise (never reads)."""
        answer = self._aliases.get((model, alias))
        return None if answer is None or answer.error is not None else answer.get()

    def known_version(self, model: str, version: str) -> ModelVersion | None:
        answer = self._versions.get((model, version))
        return None if answer is None or answer.error is not None else answer.get()

    def version_by_alias(self, model: str, alias: str) -> ModelVersion | None:
        return _remembered(
            self._aliases, (model, alias), lambda key: self.registry.version_by_alias(*key)
        )

    def version(self, model: str, version: str) -> ModelVersion | None:
        return _remembered(
            self._versions, (model, version), lambda key: self.registry.version(*key)
        )

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return _remembered(self._metrics, run_id, self.registry.run_metrics)

    def signature(self, model: str, version: str) -> dict[str, Any] | None:
        return _remembered(
            self._signatures, (model, version), lambda key: self.registry.signature(*key)
        )

    def set_alias(self, model: str, alias: str, version: str) -> None:
        # A write is never remembered; the alias it moved is read again if asked.
        self._aliases.pop((model, alias), None)
        self.registry.set_alias(model, alias, version)


def _remembered(answers: dict[Key, Answer[Value]], key: Key, read: Callable[[Key], Value]) -> Value:
    if key not in answers:
        answers[key] = _answer(read, key)
    return answers[key].get()

"""Where a pass's time goes: named phases, each counted once.

A phase opened inside another pauses the outer one, so the phases of a pass add up to at most
its wall time and "render inside validate" is not counted twice. Only the thread (or context)
that opened `measuring()` is measured: work it hands to a pool is counted as the time it waits
for the pool, which is what the pass pays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)
    _open: list[tuple[str, float]] = field(default_factory=list)

    def _pause_current(self, now: float) -> None:
        if self._open:
            name, since = self._open[-1]
            self.seconds[name] = self.seconds.get(name, 0.0) + now - since

    def _enter(self, name: str) -> None:
        now = time.perf_counter()
        self._pause_current(now)
        self._open.append((name, now))

    def _leave(self) -> None:
        now = time.perf_counter()
        self._pause_current(now)
        self._open.pop()
        if self._open:
            self._open[-1] = (self._open[-1][0], now)


_current: ContextVar[Timings | None] = ContextVar("mlopsctl_timings", default=None)


@contextmanager
def measuring() -> Iterator[Timings]:
    """Collect the phases opened in this context until the block ends."""
    timings = Timings()
    token = _current.set(timings)
    try:
        yield timings
    finally:
        _current.reset(token)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the block's time to `name` (nothing happens outside `measuring`)."""
    timings = _current.get()
    if timings is None:
        yield
        return
    timings._enter(name)
    try:
        yield
    finally:
        timings._leave()

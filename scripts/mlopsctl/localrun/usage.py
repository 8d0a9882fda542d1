"""What each container of a run really uses, next to what its manifest asks for.

A sampler reads every container's cgroup once a second (memory working set, CPU seconds) and
files each sample under the phase the caller names ("idle", "load"); the report (pure) shows,
per workload: requests and limits, steady and peak memory, CPU per phase, and flags a limit with
less than 25% headroom above the peak, and a request far above what the container uses.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mlopsctl.localrun.model import Resources

HEADROOM_WANTED = 0.25
# A request this many times what the container uses at its busiest reserves capacity for nothing.
OVERSIZED_FACTOR = 4.0
# Start-up bursts past a CPU limit for a few 100 ms periods, which costs a little start-up time;
# a container throttled in more periods than this is short of CPU.
THROTTLED_SHARE_WANTED = 0.10


@dataclass
class ContainerUsage:
    """Samples of one container of a workload, by phase and by pod: a restarted container keeps
    its pod's cgroup, a rolled or rescheduled one has a new pod, and two pods of a rolling
    update run at once, so each pod's samples are read apart and then combined."""

    workload: str
    container: str
    resources: Resources
    # phase -> pod -> memory working set at each sample.
    memory: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    # phase -> pod -> (wall seconds, CPU seconds) at each sample.
    cpu: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)
    peak_memory: int = 0
    # pod -> counters of its cgroup (they only grow while the pod lives).
    oom_kills_by_pod: dict[str, int] = field(default_factory=dict)
    periods_by_pod: dict[str, int] = field(default_factory=dict)
    throttled_by_pod: dict[str, int] = field(default_factory=dict)

    @property
    def oom_kills(self) -> int:
        return sum(self.oom_kills_by_pod.values())

    @property
    def throttled_share(self) -> float:
        """The share of CPU periods in which the container was throttled, over its pods."""
        periods = sum(self.periods_by_pod.values())
        return sum(self.throttled_by_pod.values()) / periods if periods else 0.0

    def steady_memory(self, phase: str) -> int | None:
        """The median working set of the busiest pod in a phase."""
        medians = [
            sorted(samples)[len(samples) // 2]
            for samples in self.memory.get(phase, {}).values()
            if samples
        ]
        return max(medians) if medians else None

    def cpu_cores(self, phase: str) -> tuple[float, float] | None:
        """Mean and highest CPU use (cores) between samples of a phase, over its pods."""
        rates = [
            (cpu_after - cpu_before) / (wall_after - wall_before)
            for samples in self.cpu.get(phase, {}).values()
            for (wall_before, cpu_before), (wall_after, cpu_after) in itertools.pairwise(samples)
            if wall_after > wall_before and cpu_after >= cpu_before
        ]
        if not rates:
            return None
        return sum(rates) / len(rates), max(rates)


@dataclass(frozen=True)
class Reading:
    """One sample of one running container, from its cgroup."""

    workload: str
    pod: str
    container: str
    resources: Resources
    memory_bytes: int
    peak_memory_bytes: int
    cpu_seconds: float
    oom_kills: int
    periods: int
    throttled_periods: int
    # Between restarts (back-off) only the counters mean something: no memory or CPU sample.
    running: bool = True


class Sampler:
    """Samples `read()` once a second into the current phase until stopped."""

    def __init__(self, read: Callable[[], Iterable[Reading]], interval: float = 1.0) -> None:
        self.read = read
        self.interval = interval
        self.phase = "idle"
        self.usage: dict[tuple[str, str], ContainerUsage] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="usage-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        now = time.monotonic()
        readings = list(self.read())
        with self._lock:
            for reading in readings:
                record(self.usage, self.phase, now, reading)

    def snapshot(self) -> list[ContainerUsage]:
        with self._lock:
            return sorted(self.usage.values(), key=lambda usage: (usage.workload, usage.container))


def record(
    usages: dict[tuple[str, str], ContainerUsage], phase: str, now: float, reading: Reading
) -> None:
    """File one reading under its workload and container (pure, for the sampler and tests)."""
    usage = usages.setdefault(
        (reading.workload, reading.container),
        ContainerUsage(reading.workload, reading.container, reading.resources),
    )
    if reading.running:
        memory = usage.memory.setdefault(phase, {}).setdefault(reading.pod, [])
        memory.append(reading.memory_bytes)
        cpu = usage.cpu.setdefault(phase, {}).setdefault(reading.pod, [])
        cpu.append((now, reading.cpu_seconds))
    usage.peak_memory = max(usage.peak_memory, reading.peak_memory_bytes)
    usage.oom_kills_by_pod[reading.pod] = reading.oom_kills
    usage.periods_by_pod[reading.pod] = reading.periods
    usage.throttled_by_pod[reading.pod] = reading.throttled_periods


def _mebibytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}Mi"


def _cores(value: int | None) -> str:
    return "-" if value is None else f"{value}m"


def flags(usage: ContainerUsage) -> list[str]:
    """What a person sizing the cluster should look at for this container."""
    found: list[str] = []
    resources = usage.resources
    limit = resources.memory_limit_bytes
    if usage.oom_kills:
        found.append(f"OOM-killed {usage.oom_kills}x")
    if limit and usage.peak_memory > limit * (1 - HEADROOM_WANTED):
        found.append(f"memory limit headroom {1 - usage.peak_memory / limit:.0%} (< 25%)")
    request = resources.memory_request_bytes
    busiest = (
        max((usage.steady_memory(phase) or 0) for phase in usage.memory) if usage.memory else 0
    )
    if request and busiest and request > OVERSIZED_FACTOR * max(busiest, usage.peak_memory / 2):
        found.append(f"memory request {request / max(busiest, 1):.0f}x what it uses")
    cpu_request = resources.cpu_request_millis
    # A container sampled once (a Job of a second) has no rate to judge its request by.
    rates = [cores[0] for phase in usage.cpu if (cores := usage.cpu_cores(phase)) is not None]
    cpu_used = max(rates, default=0.0)
    if rates and cpu_request and cpu_request / 1000 > OVERSIZED_FACTOR * max(cpu_used, 0.01):
        found.append(f"CPU request {cpu_request}m, mean use {cpu_used * 1000:.0f}m")
    if usage.throttled_share > THROTTLED_SHARE_WANTED:
        found.append(f"CPU-throttled in {usage.throttled_share:.0%} of its periods")
    return found


def report(usages: Iterable[ContainerUsage], phases: tuple[str, ...] = ("idle", "load")) -> str:
    """A table for people: asked (requests/limits) next to used, per phase, with flags."""
    header = ["workload/container", "request", "limit", "peak mem"]
    for phase in phases:
        header += [f"mem {phase}", f"cpu {phase} (mean/max)"]
    header.append("look at")
    rows = [header]
    for usage in usages:
        resources = usage.resources
        row = [
            f"{usage.workload}/{usage.container}",
            f"{_cores(resources.cpu_request_millis)} {_mebibytes(resources.memory_request_bytes)}",
            f"{_cores(resources.cpu_limit_millis)} {_mebibytes(resources.memory_limit_bytes)}",
            _mebibytes(usage.peak_memory),
        ]
        for phase in phases:
            cores = usage.cpu_cores(phase)
            row.append(_mebibytes(usage.steady_memory(phase)))
            row.append("-" if cores is None else f"{cores[0] * 1000:.0f}m/{cores[1] * 1000:.0f}m")
        row.append("; ".join(flags(usage)) or "ok")
        rows.append(row)
    widths = [max(len(row[index]) for row in rows) for index in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )

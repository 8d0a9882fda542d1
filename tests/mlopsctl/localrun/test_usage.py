"""The resource report of a local run (pure): readings filed per workload and pod, what each
workload used next to what it asks for, and the flags a person sizing a cluster must see."""

from __future__ import annotations

from mlopsctl.localrun.model import Resources
from mlopsctl.localrun.usage import ContainerUsage, Reading, flags, record, report

MI = 2**20
ASKS = Resources(
    cpu_request_millis=100, cpu_limit_millis=500, memory_request_bytes=256 * MI,
    memory_limit_bytes=512 * MI,
)  # fmt: skip


def reading(pod: str, memory_mi: int, cpu_seconds: float, **counters: int) -> Reading:
    return Reading(
        workload="model-server",
        pod=pod,
        container="model-server",
        resources=ASKS,
        memory_bytes=memory_mi * MI,
        peak_memory_bytes=counters.pop("peak_mi", memory_mi) * MI,
        cpu_seconds=cpu_seconds,
        oom_kills=counters.pop("oom_kills", 0),
        periods=counters.pop("periods", 100),
        throttled_periods=counters.pop("throttled", 0),
    )


def filed(*samples: tuple[str, float, Reading]) -> ContainerUsage:
    usages: dict[tuple[str, str], ContainerUsage] = {}
    for phase, now, one in samples:
        record(usages, phase, now, one)
    (usage,) = usages.values()
    return usage


def test_two_pods_of_a_rolling_update_are_read_apart_then_combined():
    usage = filed(
        # The old pod: small and idle; the new one, busier, starts while the old still runs.
        ("load", 0.0, reading("old", 20, 1.0)),
        ("load", 0.0, reading("new", 300, 50.0)),
        ("load", 1.0, reading("old", 20, 1.0)),
        ("load", 1.0, reading("new", 310, 50.2)),
        ("load", 2.0, reading("new", 305, 50.6, peak_mi=330)),
    )
    # The busiest pod's median, not a mix of the two; CPU rates within each pod only.
    assert usage.steady_memory("load") == 305 * MI
    mean, highest = usage.cpu_cores("load") or (0, 0)
    assert round(highest, 2) == 0.4 and round(mean, 2) == round((0.0 + 0.2 + 0.4) / 3, 2)
    assert usage.peak_memory == 330 * MI
    assert usage.steady_memory("idle") is None


def test_a_limit_without_headroom_an_oversized_request_throttling_and_oom_kills_are_flagged():
    tight = filed(
        ("idle", 0.0, reading("a", 400, 0.0, peak_mi=450)),
        ("idle", 1.0, reading("a", 420, 0.05, peak_mi=450)),
    )
    assert "memory limit headroom 12% (< 25%)" in flags(tight)

    oversized = filed(
        ("idle", 0.0, reading("a", 30, 0.0)),
        ("idle", 1.0, reading("a", 30, 0.001)),
    )
    assert "memory request 9x what it uses" in flags(oversized)
    assert "CPU request 100m, mean use 1m" in flags(oversized)
    # Sampled once (a Job of a second): no rate, so no verdict on its CPU request.
    once = filed(("idle", 0.0, reading("a", 30, 0.0)))
    assert not [flag for flag in flags(once) if flag.startswith("CPU request")]

    # A few throttled periods at start-up are normal; a quarter of them is a CPU shortage.
    start_up = filed(("idle", 0.0, reading("a", 200, 0.0, periods=400, throttled=8)))
    assert not [flag for flag in flags(start_up) if "throttled" in flag]
    starved = filed(("idle", 0.0, reading("a", 200, 0.0, periods=400, throttled=100)))
    assert "CPU-throttled in 25% of its periods" in flags(starved)

    killed = filed(
        ("load", 0.0, reading("a", 500, 0.0, peak_mi=512, oom_kills=1)),
        ("load", 1.0, reading("b", 500, 0.0, peak_mi=512, oom_kills=2)),
    )
    assert "OOM-killed 3x" in flags(killed)


def test_the_report_puts_asks_next_to_use():
    usage = filed(
        ("idle", 0.0, reading("a", 200, 0.0)),
        ("idle", 1.0, reading("a", 200, 0.1)),
        ("load", 2.0, reading("a", 220, 0.1)),
        ("load", 3.0, reading("a", 240, 0.4)),
    )
    header, row = report([usage]).splitlines()
    assert header.split() == [
        "workload/container", "request", "limit", "peak", "mem", "mem", "idle", "cpu", "idle",
        "(mean/max)", "mem", "load", "cpu", "load", "(mean/max)", "look", "at",
    ]  # fmt: skip
    assert row.split() == [
        "model-server/model-server", "100m", "256Mi", "500m", "512Mi", "240Mi", "200Mi",
        "100m/100m", "240Mi", "300m/300m", "ok",
    ]  # fmt: skip

"""A pass's phases: each counted once, an inner phase pausing the outer, nothing measured
outside `measuring()` or in threads it did not open."""

from __future__ import annotations

import threading
import time

from mlopsctl.base import timings


def test_an_inner_phase_pauses_the_outer_one_so_nothing_is_counted_twice():
    with timings.measuring() as measured, timings.phase("validate"):
        time.sleep(0.025)
        with timings.phase("render"):
            time.sleep(0.2)
        time.sleep(0.025)
    assert measured.seconds["render"] >= 0.2
    # Its own 0.05 s: counted with render's 0.2 s it would be the larger of the two.
    assert 0.05 <= measured.seconds["validate"] < measured.seconds["render"]


def test_a_phase_opened_twice_adds_up():
    with timings.measuring() as measured:
        for _ in range(3):
            with timings.phase("git"):
                time.sleep(0.02)
    assert measured.seconds["git"] >= 0.06


def test_nothing_is_measured_outside_measuring_nor_in_another_thread():
    with timings.phase("git"):  # no measuring(): nothing to count into, and no error
        pass
    seen: list[bool] = []
    with timings.measuring() as measured:

        def elsewhere() -> None:
            with timings.phase("registry"):
                seen.append(True)

        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
    assert seen == [True]
    assert measured.seconds == {}


def test_a_phase_that_raises_is_still_counted_and_closed():
    with timings.measuring() as measured:
        try:
            with timings.phase("push"):
                time.sleep(0.02)
                raise RuntimeError("rejected")
        except RuntimeError:
            pass
        with timings.phase("git"):
            time.sleep(0.02)
    assert set(measured.seconds) == {"push", "git"}
    assert measured.seconds["push"] >= 0.02

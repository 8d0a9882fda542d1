"""Which runs are alive: a run's lock is held while its process lives, and not a moment longer."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import textwrap

import pytest

from mlopsctl.base.errors import LocalRunError
from mlopsctl.localrun import runs

pytestmark = pytest.mark.usefixtures("as_root")


def new_run_id() -> str:
    return f"r{secrets.token_hex(3)}"


def test_a_run_is_alive_from_its_lock_until_it_lets_go():
    run_id = new_run_id()
    assert not runs.is_live(run_id)
    lock = runs.RunLock(run_id)
    try:
        assert runs.is_live(run_id)
        # Asking does not take the lock: the run is still alive after being asked.
        assert runs.is_live(run_id)
        with pytest.raises(LocalRunError, match=f"run id '{run_id}' is taken by a run still going"):
            runs.RunLock(run_id)
    finally:
        lock.release()
    assert not runs.is_live(run_id)
    assert not (runs.STATE_DIRECTORY / f"run-{run_id}.lock").exists()
    lock.release()  # twice is harmless


HOLDER = textwrap.dedent(
    """
    import sys, time
    from mlopsctl.localrun.runs import RunLock

    lock = RunLock(sys.argv[1])
    print("held", flush=True)
    time.sleep(300)
    """
)


def test_a_killed_run_is_dead_and_its_record_is_forgotten_while_live_ones_stay():
    killed_id, live_id = new_run_id(), new_run_id()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, killed_id], stdout=subprocess.PIPE, text=True
    )
    live = runs.RunLock(live_id)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert runs.is_live(killed_id)
        runs.forget_dead()
        assert (runs.STATE_DIRECTORY / f"run-{killed_id}.lock").exists()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert not runs.is_live(killed_id)
        runs.forget_dead()
        assert not (runs.STATE_DIRECTORY / f"run-{killed_id}.lock").exists()
        assert runs.is_live(live_id)
        # The dead run's id is free to be taken again.
        runs.RunLock(killed_id).release()
    finally:
        holder.kill()
        holder.wait(timeout=30)
        live.release()


@pytest.mark.parametrize("run_id", ["", "UPPER", "with-dash", "a" * 9, "a/b", "ü"])
def test_a_run_id_that_cannot_name_an_interface_is_refused(run_id: str):
    with pytest.raises(LocalRunError, match="lower-case letters and digits only"):
        runs.check_run_id(run_id)
    with pytest.raises(LocalRunError, match="lower-case letters and digits only"):
        runs.RunLock(run_id)

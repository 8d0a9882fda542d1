"""Until the service moves to `mlopsctl.promote`: its old import path."""

from mlopsctl.promote.edits import ModelChange as Change
from mlopsctl.promote.flows import Landing, rollback_run, run, run_edits, set_image_run
from mlopsctl.promote.landing import Outcome, Report

__all__ = [
    "Change",
    "Landing",
    "Outcome",
    "Report",
    "rollback_run",
    "run",
    "run_edits",
    "set_image_run",
]

"""The fixture of the tests that run the local environment (see platform_run)."""

from tests.mlopsctl.localrun.platform_run import platform_run

__all__ = ["platform_run"]

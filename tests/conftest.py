"""The suite's plugins (tests/support) and its one hook: which tests share an xdist worker.

Helpers and constants live in tests/support; no test imports from here."""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = [
    "tests.support.isolation",
    "tests.support.cli",
    "tests.support.trees",
    "tests.support.mlflow_fixtures",
    "tests.support.platform_fixtures",
    "tests.support.github_standin",
    "tests.support.kube_apiserver",
    "tests.support.cluster_writes",
    "tests.support.promoter",
    "tests.support.platform_run",
]


# Modules of tests/mlopsctl/localrun/ that touch nothing of the machine's (pure code, servers on
# loopback ports of their own, a test API server): they need no turn on the platform's worker.
LOCALRUN_MODULES_ON_ANY_WORKER = frozenset(
    {
        "test_certificates.py",
        "test_model.py",
        "test_prometheus_config.py",
        "test_runs.py",
        "test_sync.py",
    }
)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `--dist loadgroup` (make test runs three workers), the tests that run the platform on
    this machine (network namespaces, cgroups, its hosts' ports, the demo) go to one worker, one
    after another, as in a serial run: every module of tests/mlopsctl/localrun/ but those named
    in LOCALRUN_MODULES_ON_ANY_WORKER (each a unit for any worker), and the demo's. Every other
    test is a unit of its own for the other workers.

    Grouped by path here, not by xdist's `xdist_group` mark: xdist 3.8 groups by rewriting
    `item._nodeid`, which pytest 9.2 no longer reads, so the mark silently split the group and
    two workers each started a platform (one then found none of the other's model versions).
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class PlatformRunTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            directory, _, module = path.rpartition("/")
            if directory == "tests/mlopsctl/localrun" and module in LOCALRUN_MODULES_ON_ANY_WORKER:
                return path  # a unit: test_sync's tests build on each other's API server
            if directory == "tests/mlopsctl/localrun" or path == "tests/scripts/test_demo.py":
                return "platform-run"
            return nodeid

    return PlatformRunTogether(config, log)

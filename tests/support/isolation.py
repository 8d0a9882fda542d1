"""What every test starts from (autouse): the pinned tools, and MLflow's HTTP settings as a
fresh process has them; and `as_root`, for the tests that make what only root can."""

from __future__ import annotations

import os

import pytest

from mlopsctl.base import registry
from mlopsctl.base.toolchain import TOOLS_DIR_VARIABLE
from tests.support.paths import TOOLS_DIR


@pytest.fixture(autouse=True)
def pinned_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test uses the repository's pinned tools, wherever it builds a tree."""
    if not (TOOLS_DIR / "bin" / "kubectl").is_file():
        pytest.fail("the pinned tools are missing: run `make setup` (make test does it)")
    monkeypatch.setenv(TOOLS_DIR_VARIABLE, str(TOOLS_DIR))


@pytest.fixture(scope="session")
def as_root() -> None:
    """For the tests that make network namespaces, nftables rules, cgroups or pods. The suite
    runs as root (README); anywhere else they fail saying so, as the platform's run does, rather
    than being skipped where nobody sees it. Session-scoped, so it comes before the module-scoped
    nodes and networks those tests build on."""
    if os.geteuid() != 0:
        pytest.fail(
            "needs root (network namespaces, nftables, cgroups, pods): run `make test` as root"
        )


@pytest.fixture(autouse=True)
def mlflow_http_settings_of_a_fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a fresh process would: none of MLflow's HTTP variables set and
    nothing remembered by `mlopsctl.base.registry` of writing them; both come back after the test.

    The registry sets these variables around each call and remembers what it wrote, so that it
    never takes its own value for the operator's. Carried from test to test, what one test's
    monkeypatch put back (a value the registry no longer remembers writing) was taken for the
    operator's by the next test's registry: a leftover "0" retries made a webhook create fail,
    and a default of 4 attempts read as another number. No real process puts variables back
    behind its own back.
    """
    for name in (registry.TIMEOUT_VARIABLE, registry.RETRIES_VARIABLE, registry.BACKOFF_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(registry, "_written", {})
    monkeypatch.setattr(registry, "_operator_values", {})


@pytest.fixture(autouse=True)
def mirrors_of_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Each test (and every mlopsctl it starts) keeps its mirrors in a directory of its own: a
    mirror left by another test, or by the user's own runs, is state no test may start from.
    (Not a whole XDG_CACHE_HOME of its own: the schemas built for kubeconform stay shared.)"""
    monkeypatch.setenv("MLOPSCTL_MIRROR_DIR", str(tmp_path_factory.mktemp("mirrors")))

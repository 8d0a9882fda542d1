"""Shared fixtures: the real repository, copies of it to break, and the CLI through main()."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlopsctl.base import registry
from mlopsctl.base.toolchain import TOOLS_DIR_VARIABLE
from mlopsctl.cli import main

pytest_plugins = [
    "tests.mlflow_fixtures",
    "tests.platform_fixtures",
    "tests.github_standin",
    "tests.kube_apiserver",
    "tests.cluster_writes",
]

REPOSITORY = Path(__file__).resolve().parents[1]
TOOLS_DIR = REPOSITORY / ".tools"
PLATFORM_PATHS = ("mlopsctl.yaml", "apps", "base", "clusters", "overlays")


@pytest.fixture(autouse=True)
def pinned_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test uses the repository's pinned tools, wherever it builds a tree."""
    if not (TOOLS_DIR / "bin" / "kubectl").is_file():
        pytest.fail("the pinned tools are missing: run `make setup` (make test does it)")
    monkeypatch.setenv(TOOLS_DIR_VARIABLE, str(TOOLS_DIR))


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


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `--dist loadgroup` (make test runs three workers), the tests that run the platform on
    this machine (network namespaces, cgroups, its hosts' ports, the demo) go to one worker, one
    after another, as in a serial run; every other test is a unit of its own for the others.

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
            if path.startswith("tests/localrun/") or path == "tests/test_demo.py":
                return "platform-run"
            return nodeid

    return PlatformRunTogether(config, log)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        exit_code = main(list(argv))
        captured = capsys.readouterr()
        return CliResult(exit_code, captured.out, captured.err)

    return run


@pytest.fixture
def platform_copy(tmp_path: Path) -> Iterator[Path]:
    """A copy of this repository's platform tree, free to break."""
    destination = tmp_path / "platform"
    destination.mkdir()
    for name in PLATFORM_PATHS:
        source = REPOSITORY / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        else:
            shutil.copy2(source, destination / name)
    yield destination


def edit_yaml(path: Path, change: Callable[[list[Any]], None]) -> None:
    """Load every document of a YAML file, change them in place, write them back."""
    documents = list(yaml.safe_load_all(path.read_text()))
    change(documents)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))


def patch_applications(repository: Path, environment: str, patch: dict[str, Any]) -> None:
    """Add `patch` to apps/<env>/kustomization.yaml: it sees base/argocd-apps' Applications by
    their names before the environment's suffix (`promoter`, not `promoter-staging`)."""
    edit_yaml(
        repository / f"apps/{environment}/kustomization.yaml",
        lambda documents: documents[0]["patches"].append(patch),
    )


def drop_application(repository: Path, environment: str, component: str) -> None:
    """Take `component`'s Application out of one environment."""
    patch = (
        "$patch: delete\napiVersion: argoproj.io/v1alpha1\nkind: Application\n"
        f"metadata:\n  name: {component}\n"
    )
    patch_applications(repository, environment, {"patch": patch})


MINIMAL_CONFIG = """\
repository:
  url: https://example.test/platform.git
environments: [local]
kubernetesVersion: "1.35"
"""


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root

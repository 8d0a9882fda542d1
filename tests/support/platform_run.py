"""The local environment of this checkout, run as its manifests say, for the tests that need it
(tests/mlopsctl/localrun/test_local_run.py): the `platform_run` fixture, a plugin named in
tests/conftest.py's `pytest_plugins`, and what its tests share.

One run per test module (it takes about a minute to come up): the platform's tree as it is in
this checkout (uncommitted edits included), committed to a bare repository that the run's git
host serves under the repository's URL. Tests change the platform by pushing commits to it, as
a person would, and the run's Argo CD stand-in syncs them.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlopsctl.localrun.kubelet import Pod
from mlopsctl.localrun.network import connect_inside
from mlopsctl.localrun.run import Forward, LocalRun, Settings, snapshot_working_tree
from tests.support import processes
from tests.support.paths import REPOSITORY

MODEL = "iris-classifier"
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def git(directory: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=directory, check=True, capture_output=True, text=True
    ).stdout


def snapshot_of_this_checkout(workspace: Path) -> tuple[Path, Path]:
    """A bare remote whose main holds this checkout's working tree, and a clone to push from."""
    remote = workspace / "platform.git"
    snapshot_working_tree(REPOSITORY, remote, "main")
    checkout = workspace / "checkout"
    git(workspace, "clone", "--quiet", str(remote), str(checkout))
    return checkout, remote


@dataclass
class RunningPlatform:
    run: LocalRun
    checkout: Path
    remote: Path
    log: list[str] = field(default_factory=list)

    def head(self) -> str:
        return git(self.remote, "rev-parse", "main").strip()

    def pin(self, environment: str = "local") -> str:
        text = git(
            self.remote, "show", f"main:overlays/{environment}/model-server/kustomization.yaml"
        )
        return text.split(f"models:/{MODEL}/")[1].split()[0]

    def push(self, change: Callable[[Path], None], message: str) -> str:
        """Change the platform as a person would: a commit on main, pushed."""
        git(self.checkout, "pull", "--quiet", "--rebase", "origin", "main")
        change(self.checkout)
        git(self.checkout, "add", "--all")
        git(
            self.checkout,
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.test",
            "commit",
            "-qm",
            message,
        )
        git(self.checkout, "push", "--quiet", "origin", "HEAD:main")
        return self.head()

    def url(self, title: str) -> str:
        return self.run.urls()[title]

    def pods(self, prefix: str, namespace: str = "ml-platform") -> list[Pod]:
        assert self.run.cluster is not None
        return [
            pod
            for pod in list(self.run.cluster.pods.values())
            if pod.namespace == namespace and pod.name.startswith(prefix) and not pod.deleting
        ]

    def mlflow(self) -> Any:
        """MLflow's client through the port-forward, as a person on the host uses it."""
        import mlflow

        url = self.url("MLflow UI")
        return mlflow.MlflowClient(tracking_uri=url, registry_uri=url)

    def predict(self) -> tuple[int, dict[str, Any]]:
        body = json.dumps(
            {"dataframe_split": {"columns": FEATURES, "data": [[5.1, 3.5, 1.4, 0.2]]}}
        ).encode()
        request = urllib.request.Request(
            f"{self.url('model server')}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


def wait_for(
    condition: Callable[[], Any],
    what: str,
    seconds: float = 120.0,
    details: Callable[[], str] | None = None,
) -> Any:
    return processes.wait_for(condition, what, seconds, interval=0.5, details=details)


def request_inside(
    pod: Pod, address: tuple[str, int], host_header: str, path: str = "/"
) -> tuple[int, bytes]:
    """An HTTP GET made from inside a pod's network namespace, with the Host a client in that
    pod would send: NetworkPolicies apply to it as to the pod's own traffic."""
    assert pod.endpoint is not None
    connection = http.client.HTTPConnection(address[0], address[1], timeout=10)
    connection.sock = connect_inside(pod.endpoint.namespace_path, address, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host_header})
        response = connection.getresponse()
        return response.status, response.read(2000)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def platform_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    workspace = tmp_path_factory.mktemp("local-run")
    checkout, remote = snapshot_of_this_checkout(workspace)
    lines: list[str] = []
    settings = Settings(
        repository=REPOSITORY,
        git_repository=remote,
        state_directory=workspace / "state",
        forwards=(
            Forward("MLflow UI", "ml-platform", "mlflow-tracking", 5000, 0),
            Forward("frontend", "ml-platform", "streamlit", 8501, 0),
            Forward("model server", "ml-platform", "model-server", 8080, 0),
            Forward("Prometheus", "monitoring", "kube-prometheus-stack-prometheus", 9090, 0),
        ),
        # Scrape and evaluate every 2 s instead of the manifests' 30 s, so the test need not
        # wait minutes for Prometheus; everything else is as the manifests say.
        scrape_interval="2s",
        evaluation_interval="2s",
        poll_seconds=1.0,
        log=lines.append,
    )
    run = LocalRun(settings)
    try:
        run.start()
        run.wait_until_healthy(timeout=600)
        yield RunningPlatform(run, checkout, remote, lines)
    except BaseException:
        print("\n".join(lines[-200:]))
        raise
    finally:
        run.stop()

"""A real MLflow tracking server on loopback, and helpers that fill its registry quickly.

Logging a model is slow (seconds), so each server logs two once: one with a signature and one
without. Further versions are registered from them, each with a run of its own metrics.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SERVER_START_SECONDS = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class MlflowServer:
    url: str
    backend_uri: str
    process: subprocess.Popen[bytes]
    log: Path
    logged_models: dict[str, tuple[str, str]] = field(default_factory=dict)

    def client(self):  # type: ignore[no-untyped-def]
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    def _logged_model(self, signature: bool) -> tuple[str, str]:
        key = "signed" if signature else "unsigned"
        if key not in self.logged_models:
            import mlflow
            import pandas as pd
            from mlflow.models import infer_signature
            from sklearn.dummy import DummyClassifier

            mlflow.set_tracking_uri(self.url)
            features = pd.DataFrame({"x": [0.0, 1.0, 2.0]})
            model = DummyClassifier().fit(features, [0, 1, 1])
            with mlflow.start_run():
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    pip_requirements=["scikit-learn"],
                    signature=infer_signature(features, model.predict(features))
                    if signature
                    else None,
                )
            self.logged_models[key] = (info.model_uri, info.model_id)
        return self.logged_models[key]

    def register(
        self,
        model: str,
        metrics: dict[str, float] | None = None,
        signature: bool = True,
        alias: str | None = None,
    ) -> str:
        """A new READY version of `model` whose run logged `metrics`; returns its number."""
        client = self.client()
        source, model_id = self._logged_model(signature)
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # already registered
            client.create_registered_model(model)
        experiment = client.get_experiment_by_name("Default")
        run = client.create_run(experiment.experiment_id if experiment else "0")
        for key, value in (metrics or {}).items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
        version = client.create_model_version(
            model, source=source, run_id=run.info.run_id, model_id=model_id
        )
        if alias:
            client.set_registered_model_alias(model, alias, version.version)
        return str(version.version)

    def set_status(self, model: str, version: str, status: str) -> None:
        """Force a registration status, as a registry mid-upload or after a failed upload has."""
        assert self.backend_uri.startswith("sqlite:///")
        with sqlite3.connect(self.backend_uri.removeprefix("sqlite:///")) as database:
            database.execute(
                "UPDATE model_versions SET status = ? WHERE name = ? AND version = ?",
                (status, model, int(version)),
            )


def start_server(directory: Path, backend_uri: str) -> MlflowServer:
    port = free_port()
    log = directory / "mlflow-server.log"
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(directory / "artifacts"),
        "--workers",
        "1",
    ]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return MlflowServer(url, backend_uri, process, log)
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"mlflow server did not answer within {SERVER_START_SECONDS} s")


def stop_server(server: MlflowServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    directory = tmp_path_factory.mktemp("mlflow")
    server = start_server(directory, f"sqlite:///{directory / 'mlflow.db'}")
    yield server
    stop_server(server)

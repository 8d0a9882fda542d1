"""A real MLflow tracking server on loopback, for the demo and the tests.

Started as the `mlflow server` command (nothing here imports MLflow until a registry helper is
used). Logging a model is slow (seconds), so `register` logs two once, one with a signature and
one without, and registers further versions from them, each with a run of its own metrics.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.backend_uri)
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text(
                    "UPDATE model_versions SET status = :status "
                    "WHERE name = :name AND version = :version"
                ),
                {"status": status, "name": model, "version": int(version)},
            )
        engine.dispose()


# Webhooks to a receiver on loopback, as DESIGN.md says; the short cache TTL lets a webhook
# registered by a test take effect within a second instead of a minute. MLflow's job execution
# is off, as in the tracking server's Deployment: its job runner and huey consumers are 8
# processes per server that the platform never uses, and were 38% of the CPU the tests spent
# (measured over `make test`'s second phase).
SERVER_ENVIRONMENT = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": "x8lB6m7fXhq2Wc4Ka9v5S1zQe3T0rYuIoPdFgHjKlZc=",
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


def start_server(
    directory: Path,
    backend_uri: str,
    port: int | None = None,
    extra_arguments: Sequence[str] = (),
) -> MlflowServer:
    """An MLflow server that is ours: answering on its port, and holding that port itself.

    A port picked free can be taken by another process before the server binds it (parallel
    test workers pick ports at the same time): the server then exits with "address in use"
    while the other process answers /health. Without a port given, a fresh one is tried.
    """
    for _retry in range(0 if port else 2):
        with contextlib.suppress(PortTakenError):
            return _start_on(directory, backend_uri, free_port(), extra_arguments)
    return _start_on(directory, backend_uri, port or free_port(), extra_arguments)


class PortTakenError(RuntimeError):
    pass


def _start_on(
    directory: Path, backend_uri: str, port: int, extra_arguments: Sequence[str]
) -> MlflowServer:
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
        *extra_arguments,
    ]
    log_start = log.stat().st_size if log.exists() else 0
    process = subprocess.Popen(
        command,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **SERVER_ENVIRONMENT},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_bytes()[log_start:].decode(errors="replace")
            if "address already in use" in output.lower():
                raise PortTakenError(f"port {port} was taken before mlflow server bound it")
            raise RuntimeError(f"mlflow server exited: {output[-2000:]}")
        # /health first: the scan of /proc runs only once something answers on the port.
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                if listens_on(process.pid, port):
                    return MlflowServer(url, backend_uri, process, log)
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"mlflow server did not answer within {SERVER_START_SECONDS} s")


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` or one of its descendants holds the listening socket on `port`."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                columns = row.split()
                local_port = int(columns[1].rsplit(":", 1)[1], 16)
                if local_port == port and columns[3] == "0A":  # 0A: LISTEN
                    sockets.add(f"socket:[{columns[9]}]")
    if not sockets:
        return False
    for process in {pid} | _descendants(pid):
        with contextlib.suppress(OSError):
            for descriptor in Path(f"/proc/{process}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if str(descriptor.readlink()) in sockets:
                        return True
    return False


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The command name in parentheses may hold spaces: the fields follow its ")".
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def stop_server(server: MlflowServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()

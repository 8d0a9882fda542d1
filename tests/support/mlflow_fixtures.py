"""pytest fixtures around scripts/local_mlflow.py: MLflow on sqlite or on a real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_mlflow import MlflowServer, PortTakenError, free_port, start_server, stop_server

__all__ = ["MlflowServer", "PortTakenError", "free_port", "start_server", "stop_server"]


class PostgresCluster:
    """A throwaway PostgreSQL cluster on loopback, run as the postgres user when we are root."""

    def __init__(self) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not binaries:
            raise RuntimeError(
                "PostgreSQL is not installed: run `make setup` (scripts/setup-system.sh)"
            )
        self.bin = binaries[-1]
        self.directory = Path(tempfile.mkdtemp(prefix="mlopsctl-postgres-"))
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(
            "initdb", "--auth=trust", "--username=postgres", "-D", str(self.directory / "data")
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.directory / "data"),
            "-w",
            "-l",
            str(self.directory / "log"),
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
            "start",
        )
        subprocess.run(
            [
                str(self.bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "mlflow",
            ],
            check=True,
            capture_output=True,
        )
        # SQLAlchemy 2.1 reads plain postgresql:// as psycopg 3; the test environment has psycopg2.
        self.uri = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/mlflow"

    def _run(self, program: str, *arguments: str) -> None:
        # PostgreSQL refuses to run as root.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, str(self.bin / program), *arguments], check=True, capture_output=True
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """A real MLflow server; sqlite unless a test module asks for "postgresql" (indirect)."""
    backend = getattr(request, "param", "sqlite")
    directory = tmp_path_factory.mktemp(f"mlflow-{backend}")
    if backend == "postgresql":
        cluster = PostgresCluster()
        server = start_server(directory, cluster.uri)
        yield server
        stop_server(server)
        cluster.stop()
    else:
        server = start_server(directory, f"sqlite:///{directory / 'mlflow.db'}")
        yield server
        stop_server(server)

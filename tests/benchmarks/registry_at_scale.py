"""What `status_at_scale` needs beyond the figures: thousands of models registered fast, and
where the time of thousands of registry reads goes (server, client, per read).

Registering through the HTTP client costs four round trips a model (create the model, its
version, two aliases), each a write the server commits to sqlite on its one worker: about
45 ms a model, 90 s for 2,000. MLflow's own SQL store, the code the server runs for those
requests, writes the same rows in-process in about a quarter of that. It is only for a
benchmark that owns its SQL backend; the server reads what it wrote like anything else.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

from tests.support.mlflow_fixtures import MlflowServer

ALIASES = ("challenger", "champion")
# What `status` at 2,000 models x 3 environments should take (issue 15).
STATUS_TARGET_SECONDS = 5.0


def register_models(server: MlflowServer, models: list[str]) -> float:
    """Each model with version 1 READY, behind both aliases; returns the seconds it took.

    The versions are registered from one logged model (`models:/<seed>/1`), as a registry that
    promotes one training run's model under many names would have them."""
    started = time.perf_counter()
    seed = f"{models[0]}-seed"
    with contextlib.redirect_stdout(io.StringIO()):
        server.register(seed, {"accuracy": 0.9})
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(server.backend_uri)
    if server.backend_uri.startswith("sqlite:"):
        import sqlalchemy

        # Each store call commits, and sqlite syncs every commit to disk: 4 a model, a few ms
        # each on a busy disk. This database lives as long as the benchmark; a crash mid-way
        # only loses the benchmark.
        @sqlalchemy.event.listens_for(store.engine, "connect")
        def _no_sync(connection: Any, _record: Any) -> None:
            connection.execute("PRAGMA synchronous=OFF")

        store.engine.dispose()  # the connections made so far, without it
    run_id = store.get_model_version(seed, "1").run_id
    for model in models:
        store.create_registered_model(model)
        version = store.create_model_version(model, source=f"models:/{seed}/1", run_id=run_id)
        for alias in ALIASES:
            store.set_registered_model_alias(model, alias, version.version)
    return time.perf_counter() - started


def register_over_http(server: MlflowServer, models: list[str]) -> float:
    """The same through MLflow's HTTP client, one model after another; the seconds it took."""
    client = server.client()
    seed = f"{models[0]}-seed"
    with contextlib.redirect_stdout(io.StringIO()):
        server.register(seed, {"accuracy": 0.9})
    source = f"models:/{seed}/1"
    started = time.perf_counter()
    for model in models:
        client.create_registered_model(model)
        version = client.create_model_version(model, source=source)
        for alias in ALIASES:
            client.set_registered_model_alias(model, alias, version.version)
    return time.perf_counter() - started


def server_seconds_per_read(server: MlflowServer, models: list[str]) -> float:
    """What the server takes to answer one alias read, one at a time, through a bare
    kept-alive HTTP connection (next to no client work): the floor of a serial read."""
    address = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:

        def read(model: str) -> None:
            query = urllib.parse.urlencode({"name": model, "alias": ALIASES[0]})
            connection.request("GET", f"/api/2.0/mlflow/registered-models/alias?{query}")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200, answer.status

        read(models[0])
        started = time.perf_counter()
        for model in models:
            read(model)
        return (time.perf_counter() - started) / len(models)
    finally:
        connection.close()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its descendants (the server's workers)."""
    ticks = 0
    pending = [pid]
    while pending:
        process = pending.pop()
        with contextlib.suppress(OSError):
            # Fields after the command name's ")": utime and stime are the 12th and 13th.
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{process}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
    return ticks / os.sysconf("SC_CLK_TCK")


def timed_status(command: list[str]) -> tuple[float, Any]:
    """Seconds and JSON of a `status` run; a run that failed (exit 2 or more) is no figure."""
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if completed.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} exited {completed.returncode}: {completed.stderr}")
    return elapsed, json.loads(completed.stdout)

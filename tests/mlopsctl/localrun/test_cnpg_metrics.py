"""The local run's stand-in for CloudNativePG's metrics exporter, against a real PostgreSQL: the
operator's series names and labels, read from the server, and `cnpg_collector_up 0` without it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlopsctl.localrun import cnpg_metrics
from tests.support.mlflow_fixtures import PostgresCluster, free_port

EXPORTER = Path(cnpg_metrics.__file__)


def series(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, **labels: str
) -> float:
    matches = [
        number
        for (name, its_labels), number in found.items()
        if name == metric and set(labels.items()) <= its_labels
    ]
    assert matches, f"no {metric} with {labels} in {sorted(name for name, _ in found)}"
    return matches[0]


def test_the_exporter_serves_the_operators_series_from_a_real_server(
    monkeypatch: pytest.MonkeyPatch,
):
    cluster = PostgresCluster()
    monkeypatch.setenv("PGPORT", str(cluster.port))
    monkeypatch.setenv("PATH", f"{cluster.bin}{os.pathsep}{os.environ['PATH']}")
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(EXPORTER),
            f"--port={port}",
            f"--socket-directory={cluster.directory}",
            "--cluster=postgres",
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/metrics", timeout=5
                ) as answer:
                    text = answer.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "the exporter did not answer"
                time.sleep(0.2)
        found = series(text)
        assert value(found, "cnpg_collector_up", cluster="postgres") == 1
        assert value(found, "cnpg_pg_database_size_bytes", datname="mlflow") > 1_000_000
        assert value(found, "cnpg_pg_settings_setting", name="max_connections") == 100
        # The exporter's own query is a backend of the postgres database, active.
        assert value(found, "cnpg_backends_total", datname="postgres", state="active") >= 1
        assert value(found, "cnpg_pg_replication_lag") == 0  # a primary
        assert value(found, "cnpg_pg_postmaster_start_time") > 1_700_000_000
        assert value(found, "cnpg_pg_stat_database_xact_commit_total", datname="postgres") > 0
    finally:
        process.terminate()
        process.wait(timeout=10)
        cluster.stop()
    # The server gone: the collector says so, and nothing else is made up.
    down = series(cnpg_metrics.exposition(str(cluster.directory), "postgres"))
    assert down == {("cnpg_collector_up", frozenset({("cluster", "postgres")})): 0}

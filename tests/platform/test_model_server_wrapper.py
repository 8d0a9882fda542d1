"""images/model-server/serve.py, the model server's entry point, run as the Deployment runs it.

A pin of version 0 (nothing promoted yet) gets a ready placeholder whose /invocations answers
503 NO_MODEL_PROMOTED; a real version gets MLflow's own scoring app, loaded from the registry.
Both answer /metrics: prediction requests by status, latency and errors, labelled with the model
and the version served.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.mlflow_fixtures import MlflowServer, free_port
from tests.support.model_server import (
    BIN,
    SERVE,
    deployment_arguments,
    labels,
    request,
    samples,
    serving,
)


def test_a_pin_of_version_0_serves_a_ready_placeholder(tmp_path: Path):
    port = free_port()
    started = time.monotonic()
    # No MLflow anywhere: the placeholder must not need one.
    arguments = [*deployment_arguments("models:/iris-classifier/0", port), "--workers", "1"]
    with serving(arguments, tmp_path / "serve.log") as (url, process):
        ready_after = time.monotonic() - started
        for path in ("/ping", "/health"):
            status, answer = request(f"{url}{path}")
            assert status == 200  # ready on purpose: the environment is healthy and waits
            assert answer["status"] == "no model promoted"
            assert (answer["model"], answer["version"]) == ("iris-classifier", "0")
        assert request(f"{url}/version") == (
            200,
            {"model": "iris-classifier", "version": "0", "promoted": False},
        )
        body = json.dumps({"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}).encode()
        status, answer = request(f"{url}/invocations", body)
        assert status == 503
        assert answer == {
            "error_code": "NO_MODEL_PROMOTED",
            "message": "No version of iris-classifier has been promoted to this environment "
            "yet: train one and move the alias it follows; the promoter then pins it.",
        }
        served = labels(model="iris-classifier", version="0")
        found = samples(url)
        assert found[("model_server_model_info", served)] == 1
        # The one prediction request: answered 503, a server error for the dashboards.
        assert found[("model_server_requests_total", served | {("code", "503")})] == 1
        assert found[("model_server_request_errors_total", served | {("code", "503")})] == 1
        assert found[("model_server_request_duration_seconds_count", served)] == 1
        assert request(f"{url}/ping", b"{}")[0] == 404  # POST where only GET is served
        assert request(f"{url}/invocations")[0] == 404  # GET where only POST is served

        # Clients that connect and send nothing do not take the probe's answer away.
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        try:
            probe_started = time.monotonic()
            assert request(f"{url}/ping", timeout=2)[0] == 200
            probe_took = time.monotonic() - probe_started
        finally:
            for connection in idle:
                connection.close()

        stop_started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        stopped_after = time.monotonic() - stop_started
    print(
        f"placeholder ready after {ready_after:.2f} s, probe beside idle clients "
        f"{probe_took * 1000:.0f} ms, stopped {stopped_after * 1000:.0f} ms after SIGTERM"
    )
    assert stopped_after < 2
    log = (tmp_path / "serve.log").read_text()
    assert "No version of iris-classifier is promoted to this environment yet" in log


def test_a_real_version_is_served_by_mlflows_scoring_app_with_metrics(
    mlflow_server: MlflowServer, tmp_path: Path
):
    model = "wrapper-model"
    version = mlflow_server.register(model, {"accuracy": 0.9})
    port = free_port()
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
    }
    arguments = [*deployment_arguments(f"models:/{model}/{version}", port), "--workers=1"]
    started = time.monotonic()
    with serving(arguments, tmp_path / "serve.log", environment, seconds=180) as (url, _process):
        ready_after = time.monotonic() - started
        body = json.dumps({"dataframe_split": {"columns": ["x"], "data": [[1.0], [2.0]]}})
        status, answer = request(f"{url}/invocations", body.encode(), timeout=30)
        assert status == 200
        assert answer == {"predictions": [1, 1]}  # the registered DummyClassifier's answer
        # MLflow's own answer to a body that is not JSON: a client error, not a server one.
        status, answer = request(f"{url}/invocations", b"{not json", timeout=30)
        assert status == 400
        assert answer["error_code"] == "BAD_REQUEST"
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
            assert response.status == 200  # MLflow's own /ping, not the placeholder's JSON
        with urllib.request.urlopen(f"{url}/version", timeout=5) as response:
            assert response.read().decode() == "3.17.2"  # MLflow's /version: its own version
        served = labels(model=model, version=str(version))
        found = samples(url)
    assert found[("model_server_model_info", served)] == 1
    assert found[("model_server_requests_total", served | {("code", "200")})] == 1
    assert found[("model_server_requests_total", served | {("code", "400")})] == 1
    assert found[("model_server_request_errors_total", served | {("code", "500")})] == 0
    assert found[("model_server_request_duration_seconds_count", served)] == 2
    assert found[("process_resident_memory_bytes", frozenset())] > 0
    print(f"real scoring server ready after {ready_after:.1f} s")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--host=127.0.0.1", "--port=8080"], "the following arguments are required"),
        (["--model-uri=models:/m/0", "--port=eighty"], "invalid int value: 'eighty'"),
        (["--model-uri=models:/m/3", "--port=70000"], "70000 is not a TCP port"),
        (["--model-uri=models:/m/3", "--env-manager=conda"], "invalid choice: 'conda'"),
        (["--model-uri=models:/m/3", "--workers=4"], "invalid choice: 4"),
        (["--model-uri=models:/m/3", "--enable-mlserver"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_2_with_a_reason(arguments: list[str], message: str):
    completed = subprocess.run(
        [sys.executable, str(SERVE), *arguments],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert completed.returncode == 2
    assert message in completed.stderr


def test_a_missing_mlflow_is_named(tmp_path: Path):
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow/__init__.py").write_text("raise ImportError('mlflow is broken here')\n")
    completed = subprocess.run(
        [sys.executable, str(SERVE), "--model-uri=models:/m/3", "--port=8080"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        timeout=60,
    )
    assert completed.returncode == 127
    assert "serve.py: cannot serve models:/m/3: mlflow is broken here" in completed.stderr

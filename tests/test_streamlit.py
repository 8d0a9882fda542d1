"""The Streamlit frontend against a real `mlflow models serve` of a model the trainer made."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.chromium import page_text_and_screenshot
from tests.conftest import REPOSITORY
from tests.mlflow_fixtures import MlflowServer, free_port

APP = REPOSITORY / "images/streamlit/app.py"
ARTIFACTS = REPOSITORY / "build/test-artifacts"
BIN = Path(sys.executable).parent


def wait_for_url(url: str, seconds: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


@pytest.fixture(scope="module")
def model_server(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The trainer's best model, v1 of iris-classifier, served by `mlflow models serve`."""
    subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "images/trainer/train.py"),
            "--tracking-uri",
            mlflow_server.url,
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = tmp_path_factory.mktemp("model-server") / "serve.log"
    # The scoring server is started as `uvicorn` from PATH.
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    process = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/iris-classifier/1",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_url(f"{url}/ping", 180, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def app(monkeypatch: pytest.MonkeyPatch, server_url: str) -> AppTest:
    monkeypatch.setenv("MODEL_SERVER_URL", server_url)
    monkeypatch.setenv("MODEL_URI", "models:/iris-classifier/1")
    return AppTest.from_file(str(APP), default_timeout=30).run()


def test_it_shows_the_prediction_the_probabilities_and_the_model(model_server, monkeypatch):
    page = app(monkeypatch, model_server)
    assert not page.exception
    assert [s.value for s in page.success] == ["Predicted class: **versicolor**"]
    assert page.caption[0].value.startswith("Model **iris-classifier**, version **1**")
    table = page.dataframe[0].value
    assert list(table["class"]) == ["setosa", "versicolor", "virginica"]
    assert abs(table["probability"].sum() - 1.0) < 1e-6
    assert table.set_index("class")["probability"].idxmax() == "versicolor"

    page.number_input(key="petal length (cm)").set_value(1.4).run()
    page.number_input(key="petal width (cm)").set_value(0.2).run()
    assert [s.value for s in page.success] == ["Predicted class: **setosa**"]


def test_a_model_server_that_is_down_gets_a_clear_message(monkeypatch):
    page = app(monkeypatch, f"http://127.0.0.1:{free_port()}")
    assert not page.success
    assert "is not reachable" in page.error[0].value


def test_a_model_server_error_is_shown_with_its_status(mlflow_server, monkeypatch):
    # The tracking server is a real HTTP server with no /invocations.
    page = app(monkeypatch, mlflow_server.url)
    assert "the model server answered HTTP" in page.error[0].value


def test_in_headless_chromium(model_server, tmp_path: Path):
    port = free_port()
    log = tmp_path / "streamlit.log"
    environment = {
        **os.environ,
        "MODEL_SERVER_URL": model_server,
        "MODEL_URI": "models:/iris-classifier/1",
        "HOME": str(tmp_path),
    }
    process = subprocess.Popen(
        [
            str(BIN / "streamlit"),
            "run",
            str(APP),
            "--server.headless=true",
            "--server.address=127.0.0.1",
            f"--server.port={port}",
            "--browser.gatherUsageStats=false",
        ],
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_url(f"http://127.0.0.1:{port}/_stcore/health", 60, process, log)
        screenshot = ARTIFACTS / "streamlit.png"
        text = page_text_and_screenshot(
            f"http://127.0.0.1:{port}", "Predicted class", screenshot, free_port()
        )
        assert "Predicted class: versicolor" in text
        assert "Model iris-classifier, version 1" in text
        assert screenshot.stat().st_size > 10_000  # a real picture, kept as a test artifact
    finally:
        process.terminate()
        process.wait(timeout=30)

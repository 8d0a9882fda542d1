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

from tests.support.chromium import page_text_and_screenshot
from tests.support.mlflow_fixtures import MlflowServer, free_port
from tests.support.model_server import deployment_arguments, placeholder, serving
from tests.support.paths import REPOSITORY

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
    """The trainer's best model, v1 of iris-classifier, served as the image serves it: the entry
    point serve.py with the Deployment's arguments, which execs `mlflow models serve`."""
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
    log = tmp_path_factory.mktemp("model-server") / "serve.log"
    # The scoring server is started as `uvicorn` from PATH.
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    arguments = deployment_arguments("models:/iris-classifier/1", free_port())
    with serving(arguments, log, environment, seconds=180) as (url, _process):
        yield url


def app(
    monkeypatch: pytest.MonkeyPatch, server_url: str, model_uri: str = "models:/iris-classifier/1"
) -> AppTest:
    monkeypatch.setenv("MODEL_SERVER_URL", server_url)
    monkeypatch.setenv("MODEL_URI", model_uri)
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


def assert_says_nothing_is_promoted(page: AppTest) -> None:
    assert not page.exception
    [info] = page.info
    assert "No model is served in this environment yet" in info.value
    assert "no version of iris-classifier has been promoted here" in info.value
    assert "train one" in info.value and "move the alias this environment follows" in info.value
    # Nothing that pretends a prediction could be had.
    assert not page.number_input and not page.success and not page.error
    assert not page.dataframe


def test_a_pin_of_version_0_says_no_model_is_served_yet(monkeypatch):
    # A new environment: nothing promoted. The model server is not even asked.
    page = app(monkeypatch, f"http://127.0.0.1:{free_port()}", "models:/iris-classifier/0")
    assert_says_nothing_is_promoted(page)
    assert page.caption[0].value == (
        "Model **iris-classifier**: no version promoted to this environment yet"
    )


def test_a_model_server_with_nothing_promoted_gets_the_same_message(monkeypatch, tmp_path: Path):
    # The frontend already names v1 while the model server still serves the placeholder (the
    # two roll separately after the first promotion).
    with placeholder("iris-classifier", tmp_path / "serve.log") as url:
        page = app(monkeypatch, url)
    assert_says_nothing_is_promoted(page)


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

"""The model server's entry point (images/model-server/serve.py) run as the Deployment runs it,
on a loopback port: for its own tests and the frontend's, which calls it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.mlflow_fixtures import free_port
from tests.support.paths import REPOSITORY

SERVE = REPOSITORY / "images/model-server/serve.py"
BIN = Path(sys.executable).parent


def deployment_arguments(model_uri: str, port: int) -> list[str]:
    """The container's args in base/model-server/deployment.yaml, on loopback."""
    return [
        f"--model-uri={model_uri}",
        "--env-manager=local",
        "--host=127.0.0.1",
        f"--port={port}",
    ]


def request(url: str, body: bytes | None = None, timeout: float = 5) -> tuple[int, dict[str, Any]]:
    """(status, JSON answer) of a GET, or of a POST when there is a body."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=body, headers=headers), timeout=timeout
        ) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample /metrics answers, by (name, labels)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def wait_until_ready(url: str, seconds: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve.py exited with {process.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url}/ping did not answer within {seconds} s: {log.read_text()[-2000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """The whole session: the real server's CLI leaves its uvicorn child behind otherwise."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # anything the server left in its session


@contextmanager
def serving(
    arguments: list[str], log: Path, environment: dict[str, str] | None = None, seconds: float = 20
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """serve.py started with `arguments` (which must hold --port), ready on /ping."""
    port = next(int(a.split("=", 1)[1]) for a in arguments if a.startswith("--port="))
    process = subprocess.Popen(
        [sys.executable, str(SERVE), *arguments],
        env=environment if environment is not None else {"PATH": "/usr/bin:/bin"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, seconds, process, log)
        yield url, process
    finally:
        stop(process)


@contextmanager
def placeholder(model: str, log: Path) -> Iterator[str]:
    """The model server as a new environment runs it: nothing promoted, a pin of version 0."""
    with serving(deployment_arguments(f"models:/{model}/0", free_port()), log) as (url, _process):
        yield url

"""A promoter (`mlopsctl serve`) run as its own process on a loopback port, for the service's
tests: the fixture that starts it, signed webhook deliveries, and waiting on what it does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlopsctl.service import webhooks
from tests.support.mlflow_fixtures import free_port
from tests.support.platform_fixtures import Platform

SECRET = "a-webhook-secret-for-tests"
MLOPSCTL = str(Path(sys.executable).parent / "mlopsctl")


def metric_total(metrics_text: str, name: str) -> float:
    """The sum of every sample of `name` (a prefix: a metric, or a metric and some labels)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {seconds} s")


class Promoter:
    def __init__(
        self, platform: Platform, mlflow_url: str, interval: float, log: Path, *extra: str
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [
                MLOPSCTL,
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--remote",
                str(platform.remote),
                "--mlflow-uri",
                mlflow_url,
                "--interval",
                str(interval),
                "--environments",
                "local",
                *extra,
            ],
            env={**os.environ, "MLOPSCTL_WEBHOOK_SECRET": SECRET},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.get("/healthz")[0] == 200, 30, "the promoter answering /healthz")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return 0, ""

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        request = urllib.request.Request(self.url + "/webhooks/mlflow", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def metric(self, name: str) -> float:
        _status, text = self.get("/metrics")
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()  # fail, but leave no promoter behind for the other tests
            self.process.wait(timeout=10)
            raise


@pytest.fixture
def start_promoter(tmp_path: Path) -> Iterator[Callable[..., Promoter]]:
    started: list[Promoter] = []

    def start(platform: Platform, mlflow_url: str, interval: float = 3600, *extra: str) -> Promoter:
        promoter = Promoter(
            platform, mlflow_url, interval, tmp_path / f"promoter-{len(started)}.log", *extra
        )
        started.append(promoter)
        return promoter

    yield start
    for promoter in started:
        promoter.stop()


def promotions_on_main(platform: Platform) -> list[str]:
    return [subject for subject in platform.log() if subject.startswith("promote(")]


def signed(
    body: bytes, delivery_id: str | None = None, timestamp: int | None = None, secret: str = SECRET
) -> dict[str, str]:
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    return {
        "Content-Type": "application/json",
        webhooks.DELIVERY_HEADER: delivery_id,
        webhooks.TIMESTAMP_HEADER: stamp,
        webhooks.SIGNATURE_HEADER: webhooks.signature(secret, delivery_id, stamp, body),
    }

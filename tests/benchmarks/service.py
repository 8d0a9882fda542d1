"""Webhook-to-commit latency of `mlopsctl serve`, next to the CLI in the same run, and a burst.

A real MLflow server (sqlite, webhooks on) delivers to a real promoter on loopback, which pushes
to a real bare remote. The floor is `mlopsctl promote` run by hand right after the alias moves:
what the promoter costs beyond it is the webhook delivery and the wake-up.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.benchmarks.promotion import MLOPSCTL, REPOSITORY, percentile, platform_remote, run
from tests.support.mlflow_fixtures import free_port, start_server, stop_server

SAMPLES = 30
BURST = 200
BURST_SECONDS = 60
SECRET = "benchmark-webhook-secret"


def main_pin(remote: Path) -> str:
    text = run("git", "show", "main:overlays/local/model-server/kustomization.yaml", cwd=remote)
    return text.split("models:/iris-classifier/")[1].split()[0]


def commits(remote: Path) -> int:
    return int(run("git", "rev-list", "--count", "main", cwd=remote).strip())


def wait_for_pin(remote: Path, version: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while main_pin(remote) != version:
        if time.monotonic() > deadline:
            raise RuntimeError(f"v{version} did not land within {seconds} s")
        time.sleep(0.05)


def main() -> int:
    logging.disable(logging.INFO)
    scratch = Path(tempfile.mkdtemp(prefix="mlopsctl-bench-service-"))
    os.environ.setdefault("MLOPSCTL_TOOLS_DIR", str(REPOSITORY / ".tools"))
    server = start_server(scratch, f"sqlite:///{scratch / 'mlflow.db'}")
    promoter = None
    try:
        client = server.client()
        quiet = contextlib.redirect_stdout(io.StringIO())
        with quiet:
            versions = [
                server.register("iris-classifier", {"accuracy": 0.9})
                for _ in range(SAMPLES * 2 + 2)
            ]
        served = scratch / "served"
        served.mkdir()
        _checkout, remote = platform_remote(served)
        port = free_port()
        environment = {**os.environ, "MLOPSCTL_WEBHOOK_SECRET": SECRET}
        promoter = subprocess.Popen(
            [
                MLOPSCTL,
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--remote",
                str(remote),
                "--mlflow-uri",
                server.url,
                "--interval",
                "3600",
                "--environments",
                "local",
            ],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                MLOPSCTL,
                "webhook",
                "register",
                "--url",
                f"http://127.0.0.1:{port}/webhooks/mlflow",
                "--mlflow-uri",
                server.url,
            ],
            env=environment,
            check=True,
            capture_output=True,
        )
        time.sleep(2)  # MLflow's webhook cache

        latencies = []
        for version in versions[1 : SAMPLES + 1]:
            started = time.perf_counter()
            client.set_registered_model_alias("iris-classifier", "challenger", version)
            wait_for_pin(remote, version)
            latencies.append(time.perf_counter() - started)

        cli_dir = scratch / "cli"
        cli_dir.mkdir()
        cli_checkout, cli_remote = platform_remote(cli_dir)
        # The CLI follows the same alias: point it at a remote of its own.
        floors = []
        for version in versions[SAMPLES + 1 : 2 * SAMPLES + 1]:
            started = time.perf_counter()
            client.set_registered_model_alias("iris-classifier", "challenger", version)
            run(
                MLOPSCTL,
                "promote",
                "--repo",
                str(cli_checkout),
                "--remote",
                str(cli_remote),
                "--mlflow-uri",
                server.url,
                "--env",
                "local",
            )
            floors.append(time.perf_counter() - started)
        wait_for_pin(remote, versions[2 * SAMPLES])  # the promoter followed those moves too

        before = commits(remote)
        burst_versions = [versions[i % len(versions)] for i in range(BURST)]
        started = time.perf_counter()
        for version in burst_versions:
            client.set_registered_model_alias("iris-classifier", "challenger", version)
        moved = time.perf_counter() - started
        final = burst_versions[-1]
        wait_for_pin(remote, final)
        settled = time.perf_counter() - started
        burst_commits = commits(remote) - before

        p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
        floor = statistics.median(floors)
        print(
            f"webhook -> commit on the remote, {SAMPLES} alias moves: "
            f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
        )
        print(
            f"  CLI floor (alias move, then `mlopsctl promote`): median {floor * 1000:.0f} ms; "
            f"ratio p50 / floor {p50 / floor:.2f}x"
        )
        verdict = "within" if moved <= BURST_SECONDS else "OVER"
        print(
            f"burst: {BURST} alias moves in {moved:.1f} s ({verdict} {BURST_SECONDS} s); the last "
            f"(v{final}) on main {settled:.1f} s after the first, in {burst_commits} commits"
        )
    finally:
        if promoter is not None:
            promoter.terminate()
            promoter.wait(timeout=60)
        stop_server(server)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0

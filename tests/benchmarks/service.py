"""Webhook-to-commit latency of `mlopsctl serve` against the physical floor, and a burst.

A real MLflow server (sqlite, webhooks on) delivers to a real promoter on loopback, which pushes
to a real bare remote. The floor, measured in the same run on the same remote, is what any
promotion has to pay: one `git commit` + `git push` and one render of the overlay. The promoter's
own histogram (mlopsctl_reconcile_phase_seconds) says where each pass's time goes.
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
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.benchmarks.promotion import (
    MLOPSCTL,
    REPOSITORY,
    commit,
    percentile,
    physical_floor,
    platform_remote,
    run,
)
from tests.support.mlflow_fixtures import MlflowServer, free_port, start_server, stop_server

SAMPLES = 30
P50_TARGET = 3.0  # times the floor
P95_TARGET = 5.0
BURST_MODELS = 100
BURST_MOVES = 1000
BURST_MOVERS = 4
BURST_SECONDS = 60
BURST_SETTLE_TARGET_SECONDS = 5.0
SECRET = "benchmark-webhook-secret"
OVERLAY = "overlays/local/model-server"


def main_pin(remote: Path) -> str:
    text = run("git", "show", f"main:{OVERLAY}/kustomization.yaml", cwd=remote)
    return text.split("models:/iris-classifier/")[1].split()[0]


def commits(remote: Path) -> int:
    return int(run("git", "rev-list", "--count", "main", cwd=remote).strip())


def wait_until(condition: object, what: str, seconds: float = 120) -> None:
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds} s")
        time.sleep(0.02)


@contextlib.contextmanager
def promoter(server: MlflowServer, remote: Path, scratch: Path) -> Iterator[int]:
    """`mlopsctl serve` for the local environment, its webhook registered; yields its port."""
    port = free_port()
    environment = {
        **os.environ,
        "MLOPSCTL_WEBHOOK_SECRET": SECRET,
        "MLOPSCTL_MIRROR_DIR": str(scratch / "mirrors"),
    }
    process = subprocess.Popen(
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
        stderr=(scratch / "promoter.log").open("w"),
    )
    try:
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
        wait_until(lambda: phase_seconds(port)[1] >= 1, "the promoter's startup pass")
        time.sleep(2)  # MLflow's webhook cache
        yield port
    finally:
        process.terminate()
        process.wait(timeout=60)
        # MLflow would go on delivering to the stopped promoter, each delivery retried with
        # back-off by one of its 10 delivery threads: the next part's events would queue behind.
        client = server.client()
        for webhook in client.list_webhooks():
            client.delete_webhook(webhook.webhook_id)


def phase_seconds(port: int) -> tuple[dict[str, float], float]:
    """The promoter's seconds per phase over every pass so far, and the count of passes."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    spent: dict[str, float] = {}
    passes = 0.0
    for line in text.splitlines():
        if line.startswith("mlopsctl_reconcile_phase_seconds_sum{"):
            name = line.split('phase="', 1)[1].split('"', 1)[0]
            spent[name] = float(line.rsplit(" ", 1)[1])
        elif line.startswith('mlopsctl_reconcile_phase_seconds_count{phase="other"}'):
            passes = float(line.rsplit(" ", 1)[1])
    return spent, passes


def latency(server: MlflowServer, scratch: Path) -> None:
    client = server.client()
    with contextlib.redirect_stdout(io.StringIO()):
        versions = [server.register("iris-classifier", {"accuracy": 0.9}) for _ in range(SAMPLES)]
    checkout, remote = platform_remote(scratch)
    floors = physical_floor(remote, scratch / "floor", OVERLAY, SAMPLES)
    with promoter(server, remote, scratch) as port:
        before, passes_before = phase_seconds(port)
        latencies = []
        for version in versions:
            started = time.perf_counter()
            client.set_registered_model_alias("iris-classifier", "challenger", version)
            wait_until(lambda version=version: main_pin(remote) == version, f"v{version} on main")
            latencies.append(time.perf_counter() - started)
        time.sleep(0.5)  # the last pass's metrics are written just after its push
        after, passes_after = phase_seconds(port)
    del checkout
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    floor = statistics.median(floors)
    print(
        f"webhook -> commit on the remote, {SAMPLES} alias moves: "
        f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
    )
    print(f"  floor (git commit + push + render of the overlay): median {floor * 1000:.0f} ms")
    for name, value, target in (("p50", p50, P50_TARGET), ("p95", p95, P95_TARGET)):
        verdict = "within" if value <= target * floor else "OVER"
        print(f"  {name} / floor: {value / floor:.2f}x ({verdict} the {target:g}x target)")
    passes = max(1.0, passes_after - passes_before)
    spent = {name: (after[name] - before.get(name, 0.0)) / passes for name in after}
    breakdown = ", ".join(
        f"{name} {seconds * 1000:.0f} ms"
        for name, seconds in sorted(spent.items(), key=lambda item: -item[1])
    )
    print(f"  per pass ({passes:.0f} passes): {breakdown}")


def burst_platform(directory: Path, models: list[str]) -> Path:
    """A platform whose local overlay follows each of `models`' challenger alias, none promoted
    yet (version 0)."""
    literals = "".join(
        f"      # mlopsctl: model {model}@challenger\n"
        f"      - {model.upper().replace('-', '_')}=models:/{model}/0\n"
        for model in models
    )
    files = {
        "mlopsctl.yaml": "repository:\n  url: https://example.test/p.git\n"
        "environments: [local]\n"
        'kubernetesVersion: "1.35"\n'
        "promotion:\n  environments:\n    local:\n      mode: commit\n",
        "overlays/local/models/kustomization.yaml": "namespace: burst\n"
        "configMapGenerator:\n  - name: pins\n    options:\n      labels:\n"
        "        app.kubernetes.io/name: pins\n"
        "        app.kubernetes.io/component: model\n"
        "        app.kubernetes.io/part-of: burst\n"
        "    literals:\n" + literals,
    }
    checkout = directory / "checkout"
    for relative, text in files.items():
        (checkout / relative).parent.mkdir(parents=True, exist_ok=True)
        (checkout / relative).write_text(text)
    run("git", "init", "--quiet", "--initial-branch=main", cwd=checkout)
    run("git", "add", ".", cwd=checkout)
    commit(checkout, "pins")
    remote = directory / "remote.git"
    run("git", "clone", "--quiet", "--bare", str(checkout), str(remote))
    return remote


def pinned_versions(remote: Path) -> dict[str, str]:
    text = run("git", "show", "main:overlays/local/models/kustomization.yaml", cwd=remote)
    return {
        line.split("models:/", 1)[1].split("/")[0]: line.rsplit("/", 1)[1].strip()
        for line in text.splitlines()
        if "models:/" in line
    }


def burst(server: MlflowServer, scratch: Path) -> None:
    """BURST_MOVES alias moves over BURST_MODELS models, as fast as MLflow takes them."""
    models = [f"burst-{index:03d}" for index in range(BURST_MODELS)]
    with contextlib.redirect_stdout(io.StringIO()):
        for model in models:
            server.register(model, {"accuracy": 0.9})
            server.register(model, {"accuracy": 0.9})
    remote = burst_platform(scratch / "burst", models)
    wanted: dict[str, str] = {}
    with promoter(server, remote, scratch / "burst") as _port:
        before = commits(remote)
        # Back and forth between v1 and v2: every move is a change to land. Several people (or
        # training jobs) move aliases at once: each mover owns some models and moves each of
        # them in order, so the last move of every model is known.
        rounds = BURST_MOVES // BURST_MODELS
        for model in models:
            wanted[model] = "1" if (rounds - 1) % 2 == 0 else "2"

        def mover(owned: list[str]) -> None:
            mover_client = server.client()
            for round_number in range(rounds):
                for model in owned:
                    version = "1" if round_number % 2 == 0 else "2"
                    mover_client.set_registered_model_alias(model, "challenger", version)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=BURST_MOVERS) as pool:
            list(pool.map(mover, [models[index::BURST_MOVERS] for index in range(BURST_MOVERS)]))
        moved = time.perf_counter()
        try:
            wait_until(
                lambda: pinned_versions(remote) == wanted, "the burst's last versions on main"
            )
        except RuntimeError:
            log = (scratch / "burst" / "promoter.log").read_text().splitlines()
            print("\n".join(line for line in log if "failed" in line or "refused" in line))
            raise
        settled = time.perf_counter()
        burst_commits = commits(remote) - before
    verdict = "within" if moved - started <= BURST_SECONDS else "OVER"
    settle_verdict = "within" if settled - moved <= BURST_SETTLE_TARGET_SECONDS else "OVER"
    print(
        f"burst: {BURST_MOVES} alias moves over {BURST_MODELS} models, by {BURST_MOVERS} movers "
        f"at once, in {moved - started:.1f} s "
        f"({verdict} {BURST_SECONDS} s); all {BURST_MODELS} final versions on main "
        f"{settled - moved:.2f} s after the last move ({settle_verdict} the "
        f"{BURST_SETTLE_TARGET_SECONDS:g} s target), in {burst_commits} commits"
    )


def main() -> int:
    logging.disable(logging.INFO)
    scratch = Path(tempfile.mkdtemp(prefix="mlopsctl-bench-service-"))
    os.environ.setdefault("MLOPSCTL_TOOLS_DIR", str(REPOSITORY / ".tools"))
    server = start_server(scratch, f"sqlite:///{scratch / 'mlflow.db'}")
    try:
        latency(server, scratch)
        burst(server, scratch)
    finally:
        stop_server(server)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0

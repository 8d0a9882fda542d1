"""Promotion latency (alias set -> commit on the remote) and `status` at scale.

Runs a real MLflow server (sqlite) and a real bare remote. The floor, measured in the same run,
is what any promotion has to pay: one `git commit` + `git push`, and one render of the overlay.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.mlflow_fixtures import MlflowServer, start_server, stop_server

REPOSITORY = Path(__file__).resolve().parents[2]
PROMOTIONS = 30
STARTUP_SAMPLES = 5
STATUS_MODELS = 2000
ENVIRONMENTS = {"local": "challenger", "staging": "challenger", "production": "champion"}
MLOPSCTL = str(Path(sys.executable).parent / "mlopsctl")
KUBECTL = str(REPOSITORY / ".tools" / "bin" / "kubectl")


def run(*command: str, cwd: Path | None = None) -> str:
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout


def commit(directory: Path, message: str) -> None:
    run(
        "git",
        "-c",
        "user.name=b",
        "-c",
        "user.email=b@example.test",
        "commit",
        "-qm",
        message,
        cwd=directory,
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def platform_remote(scratch: Path) -> tuple[Path, Path]:
    checkout = scratch / "checkout"
    run("git", "clone", "--quiet", str(REPOSITORY), str(checkout))
    remote = scratch / "remote.git"
    run("git", "clone", "--quiet", "--bare", str(checkout), str(remote))
    return checkout, remote


def physical_floor(remote: Path, scratch: Path, overlay: str, samples: int) -> list[float]:
    """What any promotion pays, in seconds per sample: a commit pushed to `remote` and one
    render of the overlay it changes."""
    clone = scratch / "floor"
    run("git", "clone", "--quiet", str(remote), str(clone))
    floors = []
    for index in range(samples):
        started = time.perf_counter()
        (clone / "floor.txt").write_text(str(index))
        run("git", "add", "floor.txt", cwd=clone)
        commit(clone, "floor")
        run("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
        run(KUBECTL, "kustomize", str(clone / overlay))
        floors.append(time.perf_counter() - started)
    return floors


def promotion_latency(server: MlflowServer, scratch: Path) -> None:
    """`mlopsctl promote` run after each alias move: the first run builds the mirror under the
    user's cache directory, the others fetch it. Then where a later run's time goes: starting
    the command, importing MLflow's client, and the pass itself, measured as the same command
    run again and again in one warm process (what the service does per pass)."""
    checkout, remote = platform_remote(scratch)
    client = server.client()
    with contextlib.redirect_stdout(io.StringIO()):
        server.register("iris-classifier", {"accuracy": 0.9})
    mirrors = str(scratch / "mirrors")
    promote = [
        "promote",
        "--repo",
        str(checkout),
        "--remote",
        str(remote),
        "--mlflow-uri",
        server.url,
        "--env",
        "local",
    ]

    def moved_and_promoted(promote_once: Callable[[], None]) -> float:
        with contextlib.redirect_stdout(io.StringIO()):
            version = server.register("iris-classifier", {"accuracy": 0.9})
        started = time.perf_counter()
        client.set_registered_model_alias("iris-classifier", "challenger", version)
        promote_once()
        seconds = time.perf_counter() - started
        subject = run("git", "log", "-1", "--format=%s", "main", cwd=remote).strip()
        assert subject.endswith(f"-> v{version}"), subject
        return seconds

    def in_a_new_process() -> None:
        subprocess.run(
            [MLOPSCTL, *promote],
            env={**os.environ, "MLOPSCTL_MIRROR_DIR": mirrors},
            check=True,
            capture_output=True,
        )

    def in_this_process() -> None:
        from mlopsctl.cli import main as mlopsctl

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert mlopsctl([*promote, "--mirror-dir", mirrors]) == 0

    latencies = [moved_and_promoted(in_a_new_process) for _ in range(PROMOTIONS)]
    warm = [moved_and_promoted(in_this_process) for _ in range(PROMOTIONS + 1)][1:]
    floors = physical_floor(remote, scratch, "overlays/local/model-server", PROMOTIONS)
    later = latencies[1:]
    p50, p95 = percentile(later, 0.5), percentile(later, 0.95)
    floor = statistics.median(floors)
    startup = statistics.median(
        timed(MLOPSCTL, "promote", "--help") for _ in range(STARTUP_SAMPLES)
    )
    mlflow_import = statistics.median(
        timed(sys.executable, "-c", "import mlflow.tracking, mlflow.artifacts")
        - timed(sys.executable, "-c", "pass")
        for _ in range(STARTUP_SAMPLES)
    )
    warm_p50 = percentile(warm, 0.5)
    print(f"promotions: {PROMOTIONS}, alias set -> commit on the remote (`mlopsctl promote` each)")
    print(f"  first run (builds the mirror in the cache directory): {latencies[0] * 1000:.0f} ms")
    print(f"  later runs (fetch the mirror): p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    print(f"    starting the command (`mlopsctl promote --help`): {startup * 1000:.0f} ms")
    print(f"    importing MLflow's client ({mlflow_distribution()}): {mlflow_import * 1000:.0f} ms")
    print(
        f"    the pass, run again in a warm process: p50 {warm_p50 * 1000:.0f} ms, "
        f"p95 {percentile(warm, 0.95) * 1000:.0f} ms"
    )
    print(f"  floor (git commit + push + render of the overlay) median {floor * 1000:.0f} ms")
    print(f"  ratio p50 / floor: {p50 / floor:.1f}x; the warm pass: {warm_p50 / floor:.1f}x")


def timed(*command: str) -> float:
    started = time.perf_counter()
    run(*command)
    return time.perf_counter() - started


def mlflow_distribution() -> str:
    """Which MLflow this environment imports: the full one (with pandas) in the test virtualenv,
    mlflow-skinny where only mlopsctl is installed (the promoter image, `make cli`)."""
    from importlib import metadata

    for name in ("mlflow", "mlflow-skinny"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"{name} {metadata.version(name)}"
    return "MLflow"


def status_at_scale(server: MlflowServer, scratch: Path) -> None:
    """`status` over STATUS_MODELS models in 3 environments (local and staging follow
    @challenger, production @champion): 2 x STATUS_MODELS registry reads, one per model and
    alias. The server is the one `main` started, as the tests start it: one uvicorn worker on
    sqlite, which is what each of the platform's tracking server replicas runs
    (base/mlflow-tracking: `--workers=1`)."""
    import resource

    from mlopsctl.promote.registry_reads import CONCURRENT_READS
    from tests.benchmarks import registry_at_scale
    from tests.benchmarks.registry_at_scale import STATUS_TARGET_SECONDS

    repository = scratch / "status"
    (repository / "overlays").mkdir(parents=True)
    (repository / "mlopsctl.yaml").write_text(
        "repository:\n  url: https://example.test/p.git\n"
        "environments: [local, staging, production]\n"
        'kubernetesVersion: "1.35"\n'
    )
    models = [f"bench-{index:04d}" for index in range(STATUS_MODELS)]
    for environment, alias in ENVIRONMENTS.items():
        literals = "".join(
            f"      # mlopsctl: model {model}@{alias}\n      - M{index}=models:/{model}/1\n"
            for index, model in enumerate(models)
        )
        directory = repository / f"overlays/{environment}/models"
        directory.mkdir(parents=True)
        (directory / "kustomization.yaml").write_text(
            f"configMapGenerator:\n  - name: pins\n    literals:\n{literals}"
        )
    sample = [f"bench-http-{index:02d}" for index in range(50)]
    over_http = registry_at_scale.register_over_http(server, sample)
    registered = registry_at_scale.register_models(server, models)
    http_estimate = over_http / len(sample) * STATUS_MODELS
    print(
        f"setup: {STATUS_MODELS} models registered (a version, two aliases each) in "
        f"{registered:.1f} s through MLflow's SQL store; through its HTTP client, 4 calls a "
        f"model, {len(sample)} took {over_http:.1f} s: {http_estimate:.0f} s for "
        f"{STATUS_MODELS} ({http_estimate / registered:.1f}x)"
    )

    command = [MLOPSCTL, "status", "--repo", str(repository), "--mlflow-uri", server.url]
    # Once to warm the OS file cache and the server, then measured.
    registry_at_scale.timed_status([*command, "--format", "json"])
    server_before = registry_at_scale.cpu_seconds(server.process.pid)
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed, report = registry_at_scale.timed_status([*command, "--format", "json"])
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = registry_at_scale.cpu_seconds(server.process.pid) - server_before
    client_cpu = (client_after.ru_utime - client_before.ru_utime) + (
        client_after.ru_stime - client_before.ru_stime
    )
    calls = int(report["registry_calls"])
    in_step = sum(1 for row in report["pins"] if row["state"] == "in sync")
    per_read = registry_at_scale.server_seconds_per_read(server, models[:400])
    print(
        f"status: {STATUS_MODELS} models x 3 environments = {len(report['pins'])} rows "
        f"({in_step} in sync) in {elapsed:.2f} s, {calls} registry calls (one per model and "
        f"alias; pins sharing an alias share its answer), {CONCURRENT_READS} at a time"
    )
    print(
        f"  target {STATUS_TARGET_SECONDS:.0f} s: {elapsed / STATUS_TARGET_SECONDS:.1f}x the "
        f"target ({'met' if elapsed <= STATUS_TARGET_SECONDS else 'not met'})"
    )
    print(
        f"  where it goes: MLflow's server spent {server_cpu:.1f} s of CPU "
        f"({server_cpu / calls * 1000:.1f} ms a read, on one worker: one core at most); "
        f"mlopsctl {client_cpu:.1f} s ({client_cpu / calls * 1000:.1f} ms a read, start-up "
        f"included) on {os.cpu_count()} cores shared with it"
    )
    print(
        f"  floor: the server answers one alias read in {per_read * 1000:.1f} ms to a bare "
        f"HTTP client, one at a time: {calls} reads need {calls * per_read:.1f} s of its one "
        f"worker, {calls * per_read / STATUS_TARGET_SECONDS:.1f}x the target before any "
        "client work"
    )
    live_status_at_scale(repository, models, [*command, "--format", "json"], elapsed)


def timed_json(command: list[str]) -> tuple[float, Any]:
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    return elapsed, json.loads(completed.stdout)


def live_status_at_scale(
    repository: Path, models: list[str], status_command: list[str], status_seconds: float
) -> None:
    """`status --live` on the same pins, each environment's cluster being the tests' real
    kube-apiserver with what Argo CD and the kubelet would have written: an Application per
    environment, synced to the commit that holds the pins, and a Deployment whose pods read all
    of its environment's pins from one ConfigMap."""
    from mlopsctl.base.kubeapi import KubeApi
    from mlopsctl.validate import server_validation
    from tests.support import cluster_writes, kube_apiserver

    run("git", "init", "--quiet", "--initial-branch=main", cwd=repository)
    run("git", "add", ".", cwd=repository)
    commit(repository, "pins")
    revision = run("git", "rev-parse", "HEAD", cwd=repository).strip()
    with tempfile.TemporaryDirectory(prefix="bench-kube-apiserver-") as scratch:
        setup_started = time.perf_counter()
        server = kube_apiserver.start(Path(scratch))
        kube = KubeApi(server.kubeconfig)
        try:
            server_validation.prepare(kube, [])
            cluster_writes.apply(
                kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argocd"}}
            )
            for environment in ENVIRONMENTS:
                cluster_writes.deploy_models(
                    kube, environment, "models", f"ml-{environment}", models, "1", revision
                )
            setup_seconds = time.perf_counter() - setup_started
            live_seconds, report = timed_json(
                [*status_command, "--live", "--kubeconfig", str(server.kubeconfig)]
            )
        finally:
            kube.close()
            server.stop()
    in_step = sum(1 for row in report["rows"] if row["state"] == "in step")
    print(
        f"status --live: {len(models)} models x 3 environments = {len(report['rows'])} rows "
        f"({in_step} in step) in {live_seconds:.2f} s (cluster set up in {setup_seconds:.1f} s), "
        f"{live_seconds / status_seconds:.1f}x plain status; per environment one list of "
        f"Applications, Deployments and ConfigMaps, and one git log for every pin"
    )


def main() -> int:
    # MLflow prints a line per run and logs a line per version; the figures are what matter.
    logging.disable(logging.INFO)
    scratch = Path(tempfile.mkdtemp(prefix="mlopsctl-bench-"))
    os.environ.setdefault("MLOPSCTL_TOOLS_DIR", str(REPOSITORY / ".tools"))
    server = start_server(scratch, f"sqlite:///{scratch / 'mlflow.db'}")
    try:
        with contextlib.redirect_stdout(io.StringIO()) as chatter:
            server.register("warm-up", {"accuracy": 0.9})
        del chatter
        promotion_latency(server, scratch)
        status_at_scale(server, scratch)
    finally:
        stop_server(server)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

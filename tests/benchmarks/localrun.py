"""The local environment: how long it takes to come up, and what each workload really uses.

Start-up (issue 10): the environment from a clean state with an empty image cache (every image's
virtualenv built from its Dockerfile), then again with the cache warm, next to the sum of the
workloads' own start times measured in that second run (each container, started to ready): the
difference is what waves and hooks cost, the order Argo CD imposes.

Resources (issue 18): every container's memory and CPU at idle, then under a small load (a
promotion: the trainer Job, the promoter's commit, the model server's roll; a burst of
predictions; Prometheus scraping throughout), next to its requests and limits, with the flags
of `mlopsctl.localrun.usage`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlopsctl.localrun import usage
from mlopsctl.localrun.run import Forward, LocalRun, Settings, snapshot_working_tree

REPOSITORY = Path(__file__).resolve().parents[2]
IDLE_SECONDS = 30
PREDICTIONS = 200
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def start(workspace: Path, image_cache: Path, name: str) -> tuple[LocalRun, float, Path]:
    remote = workspace / f"{name}.git"
    snapshot_working_tree(REPOSITORY, remote, "main")
    run = LocalRun(
        Settings(
            repository=REPOSITORY,
            git_repository=remote,
            state_directory=workspace / f"{name}-state",
            image_cache=image_cache,
            forwards=(Forward("model server", "ml-platform", "model-server", 8080, 0),),
            log=lambda line: None,
        )
    )
    began = time.monotonic()
    run.start()
    run.wait_until_healthy()
    return run, time.monotonic() - began, remote


def own_start_times(run: LocalRun) -> dict[str, float]:
    assert run.cluster is not None
    return {
        f"{pod.owner.name}/{name}": state.start_up_seconds
        for pod in run.cluster.pods.values()
        for name, state in pod.containers.items()
        if state.start_up_seconds is not None
    }


def predictions(url: str, count: int) -> float:
    body = json.dumps({"dataframe_split": {"columns": FEATURES, "data": [[5.1, 3.5, 1.4, 0.2]]}})

    def one(_: int) -> int:
        request = urllib.request.Request(
            f"{url}/invocations", data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(count)))
    assert statuses == [200] * count, statuses
    return time.monotonic() - began


def main() -> None:
    workspace = Path(tempfile.mkdtemp(prefix="mlopsctl-bench-localrun-"))
    cold_cache = workspace / "image-cache"
    try:
        run, cold, _ = start(workspace, cold_cache, "cold")
        run.stop()
        run, warm, remote = start(workspace, cold_cache, "warm")
        try:
            times = own_start_times(run)
            print(f"start-up, empty image cache (builds every image): {cold:6.1f} s")
            print(f"start-up, images cached:                           {warm:6.1f} s")
            print(
                f"sum of the workloads' own start times:             {sum(times.values()):6.1f} s"
            )
            for name, seconds in sorted(times.items(), key=lambda item: -item[1]):
                print(f"    {name:<44} {seconds:5.1f} s")
            print(
                f"  -> waves and hooks cost {warm / max(sum(times.values()), 0.001):.2f}x the sum"
            )

            assert run.usage is not None
            time.sleep(IDLE_SECONDS)
            run.usage.phase = "load"
            began = time.monotonic()
            run.create_job("base/trainer")
            deadline = time.monotonic() + 300
            while not _pinned(remote):
                assert time.monotonic() < deadline, "the promoter did not pin the new version"
                time.sleep(0.5)
            run.wait_until_healthy(revision=_head(remote))
            promoted = time.monotonic() - began
            burst = predictions(run.urls()["model server"], PREDICTIONS)
            run.usage.sample()
            print(
                f"load: a promotion (train, commit, roll) in {promoted:.1f} s; "
                f"{PREDICTIONS} predictions in {burst:.1f} s"
            )
            print(usage.report(run.usage.snapshot()))
        finally:
            run.stop()
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _git(remote: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(remote), *arguments], capture_output=True, text=True, check=True
    ).stdout


def _head(remote: Path) -> str:
    return _git(remote, "rev-parse", "main").strip()


def _pinned(remote: Path) -> bool:
    text = _git(remote, "show", "main:overlays/local/model-server/kustomization.yaml")
    return "models:/iris-classifier/0" not in text


if __name__ == "__main__":
    main()

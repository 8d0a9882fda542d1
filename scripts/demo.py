"""`make demo`: the whole promotion flow on the platform itself, run here from its manifests.

Starts the local environment as its rendered manifests say (`mlopsctl up`'s local run: the
CloudNativePG Cluster as PostgreSQL, the tracking server with its migration Job, the model
server, the promoter with its webhook registration, Streamlit, Prometheus), from a snapshot of
this checkout served by the run's own git host under the repository's URL. The registry starts
empty, so the model server serves its placeholder and the frontend says no model is served yet.
Then it trains in the platform (base/trainer as a Job) twice, and each time MLflow's webhook
wakes the promoter, which commits local's new pin; the run's Argo CD stand-in syncs it and the
model server rolls onto the new version. Last, @champion moves in local's registry: production
follows @champion too, but in production's own registry, and its one writer is the promoter in
the production cluster, so local's promoter leaves production's pin and branches alone.

It never touches your checkout or branches, and stops everything it started, on success, on
failure and on Ctrl-C. With DEMO_SERVE=1 it keeps the platform up and prints its URLs.
Needs root (network namespaces, nftables, cgroups): `sudo make demo` elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "iris-classifier"
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
STEP_TIMEOUT_SECONDS = 300
PROMOTER = "promoter"
PASSES_METRIC = "mlopsctl_reconcile_passes_total"


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def git(*arguments: str, cwd: Path) -> str:
    completed = subprocess.run(
        ["git", *arguments], cwd=cwd, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"git {' '.join(arguments)} failed: {completed.stderr}")
    return completed.stdout


def pinned_version(remote: Path, environment: str, revision: str = "main") -> str:
    text = git(
        "show", f"{revision}:overlays/{environment}/model-server/kustomization.yaml", cwd=remote
    )
    return text.split(f"models:/{MODEL}/")[1].split()[0]


def wait_until(condition: Callable[[], bool], what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < STEP_TIMEOUT_SECONDS:
        if condition():
            return time.monotonic() - started
        time.sleep(0.25)
    raise RuntimeError(f"timed out after {STEP_TIMEOUT_SECONDS} s waiting for {what}")


def predict(model_server: str) -> str:
    """What the model server says for one flower, as a line for people."""
    body = json.dumps({"dataframe_split": {"columns": FEATURES, "data": [[5.1, 3.5, 1.4, 0.2]]}})
    request = urllib.request.Request(
        f"{model_server}/invocations",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            probabilities = json.loads(answer.read())["predictions"][0]
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}: {json.loads(error.read() or b'{}').get('error_code', '')}"
    best = max(range(len(probabilities)), key=lambda index: probabilities[index])
    return f"{['setosa', 'versicolor', 'virginica'][best]} ({probabilities[best]:.0%})"


def finished_passes(promoter: str) -> int:
    """How many reconcile passes the promoter has finished, whatever their trigger or result."""
    with urllib.request.urlopen(f"{promoter}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith(f"{PASSES_METRIC}{{")
    )


def passes_reached(promoter: str, passes: int) -> bool:
    return finished_passes(promoter) >= passes


def progress(line: str) -> None:
    """The run's report, without the pods' comings and goings unless one is in trouble."""
    trouble = ("CrashLoopBackOff", "OOMKilled", "Error", "blocked", "failed")
    if not line.startswith("pod ") or any(word in line for word in trouble):
        print(f"    {line}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workspace",
        type=Path,
        help="keep everything here (default: a temporary directory, removed at the end)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        default=os.environ.get("DEMO_SERVE") == "1",
        help="keep the platform up and print its URLs until Ctrl-C ($DEMO_SERVE=1)",
    )
    arguments = parser.parse_args(argv)
    # Imported here so that --help works without the package's dependencies.
    from mlopsctl.localrun.run import (
        DEFAULT_FORWARDS,
        Forward,
        LocalRun,
        Settings,
        snapshot_working_tree,
    )

    workspace = arguments.workspace or Path(tempfile.mkdtemp(prefix="mlopsctl-demo-"))
    workspace.mkdir(parents=True, exist_ok=True)
    remote = workspace / "platform.git"
    started = time.monotonic()
    run: LocalRun | None = None
    serving = False
    try:
        with interrupts_raise():
            say("this checkout's snapshot in a bare repository, served as the repository's URL")
            snapshot_working_tree(REPOSITORY, remote, "main")
            print(f"    {remote} (pins at v0: a new registry has no versions)", flush=True)

            say(
                "starting the local environment from its manifests "
                "(the first run builds each image's software)"
            )
            run = LocalRun(
                Settings(
                    repository=REPOSITORY,
                    git_repository=remote,
                    state_directory=workspace / "state",
                    log=progress,
                    # The promoter's /metrics tell when it has finished a pass (any free port).
                    forwards=(
                        *DEFAULT_FORWARDS,
                        Forward(PROMOTER, "ml-platform", "promoter", 8080, 0),
                    ),
                )
            )
            run.start()
            took = run.wait_until_healthy()
            say(f"every Application Synced and Healthy, {took:.0f} s after the sync began")
            urls = run.urls()
            promoter = urls.pop(PROMOTER)
            print(f"    the model server, before any promotion: {predict(urls['model server'])}")

            for _ in range(2):
                say(
                    "training in the platform (base/trainer, a Job); "
                    "it moves @challenger, which local follows"
                )
                before = pinned_version(remote, "local")
                moved = time.monotonic()
                trainer = run.create_job("base/trainer")
                for line in trainer.log_tail("trainer", 30):
                    if line.startswith(("run ", "registered ")):
                        print(f"    {line}", flush=True)
                wait_until(
                    lambda pinned=before: pinned_version(remote, "local") != pinned,
                    "local's new pin",
                )
                version = pinned_version(remote, "local")
                print(
                    f"    the promoter committed local's pin v{before} -> v{version} "
                    f"({time.monotonic() - moved:.0f} s after training began)",
                    flush=True,
                )
                head = git("rev-parse", "main", cwd=remote).strip()
                took = run.wait_until_healthy(revision=head)
                print(
                    f"    synced and rolled in {took:.0f} s: the model server now says "
                    f"{predict(urls['model server'])}",
                    flush=True,
                )

            say(
                "moving @champion in local's registry: production follows @champion in its own "
                "registry, and its one writer is the promoter in the production cluster"
            )
            import mlflow

            client = mlflow.MlflowClient(
                tracking_uri=urls["MLflow UI"], registry_uri=urls["MLflow UI"]
            )
            newest = pinned_version(remote, "local")
            client.set_registered_model_alias(MODEL, "champion", newest)
            counted = finished_passes(promoter)
            # A pass in flight now may have read the registry before the move; the pass after
            # it began after the move. Each time, setting the alias again (MLflow sends the
            # webhook again) wakes the promoter instead of leaving the pass to its timer.
            took = 0.0
            for passes in (counted + 1, counted + 2):
                client.set_registered_model_alias(MODEL, "champion", newest)
                took += wait_until(
                    functools.partial(passes_reached, promoter, passes),
                    f"the promoter's pass {passes}",
                )
            branch = f"mlopsctl/promote/production/{MODEL}"
            production = pinned_version(remote, "production")
            if branch_pins(remote, branch) is not None or production != "0":
                raise RuntimeError(
                    f"local's promoter wrote production's pin (branch {branch}, main at "
                    f"v{production}): two writers for one pin"
                )
            print(
                f"    {PROMOTER} {local_owner(remote)}: {took:.1f} s and two full passes "
                f"later, production's pin on main is still v{production} and there is no "
                f"branch {branch}",
                flush=True,
            )
            show_results(remote, workspace, urls["MLflow UI"])
            say(f"done in {time.monotonic() - started:.0f} s")
            if arguments.serve:
                serving = True
                say("the platform keeps running (Ctrl-C stops everything)")
                for title, url in urls.items():
                    print(f"    {title}: {url}", flush=True)
                # Timed sleeps: Ctrl-C or SIGTERM given to another thread is handled only when
                # the main thread next runs bytecode.
                while True:
                    time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        if serving:  # Ctrl-C is how serving ends
            print("\nstopping everything the demo started", flush=True)
            return 0
        print("\ninterrupted: stopping everything the demo started", file=sys.stderr, flush=True)
        return 130
    except Exception as error:
        print(f"\ndemo failed: {error}\nlogs are in {workspace}", file=sys.stderr, flush=True)
        if run is not None:
            print("\n".join(run.status_lines()), file=sys.stderr, flush=True)
        arguments.workspace = arguments.workspace or workspace  # keep the logs for reading
        return 1
    finally:
        if run is not None:
            run.stop()
            print("    stopped the local environment", flush=True)
        if arguments.workspace is None:
            shutil.rmtree(workspace, ignore_errors=True)


def show_results(remote: Path, workspace: Path, mlflow_url: str) -> None:
    environment = {
        **os.environ,
        "MLOPSCTL_TOOLS_DIR": os.environ.get("MLOPSCTL_TOOLS_DIR", str(REPOSITORY / ".tools")),
    }
    say("mlopsctl status --env local (what Git pins on main, next to local's registry's aliases)")
    view = workspace / "view"
    if view.exists():
        shutil.rmtree(view)
    git("clone", "--quiet", str(remote), str(view), cwd=workspace)
    status = subprocess.run(
        [BIN / "mlopsctl", "status", "--repo", view, "--env", "local", "--mlflow-uri", mlflow_url],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    print(status.stdout, end="", flush=True)
    print(
        "    (staging and production follow their own clusters' registries: their status comes "
        "from those, e.g. `mlopsctl status --env production --mlflow-uri <production's MLflow>`)"
    )

    say("promotion commits on main, with their trailers")
    print(
        git("log", "--grep=^promote(", "--format=%h %s%n%(trailers:unfold)", "main", cwd=remote),
        end="",
        flush=True,
    )

    say("the second local promotion as a reviewer sees it (mlopsctl diff, as on a pull request)")
    newest = git("log", "-1", "--grep=^promote(local)", "--format=%H", "main", cwd=remote).strip()
    git("checkout", "--quiet", newest, cwd=view)
    review = subprocess.run(
        [
            BIN / "mlopsctl",
            "diff",
            "--repo",
            view,
            "--base",
            "HEAD~1",
            "--head",
            "HEAD",
            "--mlflow-uri",
            mlflow_url,
        ],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    # Exit 1 means "there are changes", which is the point here; 2 is a failure.
    if review.returncode not in (0, 1):
        raise RuntimeError(f"mlopsctl diff failed: {review.stderr}")
    print(review.stdout, end="", flush=True)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Ctrl-C and SIGTERM unwind through the cleanup instead of killing the demo mid-step."""

    def interrupt(signal_number: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signal_number).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def local_owner(remote: Path) -> str:
    """What the local promoter's overlay on main says it owns, as the demo prints it."""
    path = "overlays/local/promoter/deployment-patch.yaml"
    text = git("show", f"main:{path}", cwd=remote)
    owned = text.split("name: MLOPSCTL_ENVIRONMENTS", 1)[1].split("value:", 1)[1].split()[0]
    return f"(MLOPSCTL_ENVIRONMENTS={owned}, {path})"


def branch_pins(remote: Path, branch: str) -> str | None:
    exists = (
        subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", branch],
            cwd=remote,
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    return pinned_version(remote, "production", branch) if exists else None


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: the whole promotion flow on one machine, in a throwaway workspace.

Starts a local MLflow server (sqlite, loopback, webhooks on), makes a throwaway clone of this
repository with a local bare remote, starts `mlopsctl serve` against them and registers its
webhook, then trains and promotes twice and moves production's alias. It never touches your
checkout or branches, and stops everything it started on success, on failure and on Ctrl-C.

With DEMO_SERVE=1 it also serves the pinned model and the Streamlit frontend until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from local_mlflow import MlflowServer, free_port, start_server, stop_server

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "iris-classifier"
PIN_FILES = {
    environment: f"overlays/{environment}/model-server/kustomization.yaml"
    for environment in ("local", "staging", "production")
}
# Only for this demo: in a real deployment the secret comes from a Secret (see README).
WEBHOOK_SECRET = "demo-webhook-secret-not-for-production"
STEP_TIMEOUT_SECONDS = 90


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(str(part) for part in command)} failed ({completed.returncode}):\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return completed.stdout


def git(*arguments: str, cwd: Path) -> str:
    return run("git", *arguments, cwd=cwd)


def pinned_version(remote: Path, environment: str, revision: str = "main") -> str:
    text = git("show", f"{revision}:{PIN_FILES[environment]}", cwd=remote)
    return text.split(f"models:/{MODEL}/")[1].split()[0]


def wait_until(condition: Callable[[], bool], what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < STEP_TIMEOUT_SECONDS:
        if condition():
            return time.monotonic() - started
        time.sleep(0.25)
    raise RuntimeError(f"timed out after {STEP_TIMEOUT_SECONDS} s waiting for {what}")


class Processes:
    """What the demo started, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.servers: list[MlflowServer] = []

    def start(
        self, name: str, command: Sequence[str | Path], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [str(part) for part in command],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.started.append((name, process))
        return process

    def stop_all(self) -> None:
        for name, process in reversed(self.started):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            print(f"    stopped {name}", flush=True)
        for server in self.servers:
            stop_server(server)
            print("    stopped the MLflow server", flush=True)


def prepare_remote(workspace: Path) -> tuple[Path, Path]:
    """A throwaway clone of this repository's committed main, behind a local bare remote."""
    remote = workspace / "platform.git"
    git(
        "clone",
        "--quiet",
        "--bare",
        "--branch",
        "main",
        str(REPOSITORY),
        str(remote),
        cwd=workspace,
    )
    checkout = workspace / "checkout"
    git("clone", "--quiet", str(remote), str(checkout), cwd=workspace)
    # A new MLflow has no versions yet: start every pin at 0, "nothing promoted so far".
    for pinned in checkout.glob("overlays/*/*/kustomization.yaml"):
        text = pinned.read_text()
        if f"models:/{MODEL}/" in text:
            pinned.write_text(re.sub(rf"models:/{MODEL}/\d+", f"models:/{MODEL}/0", text))
    git(
        "-c",
        "user.name=demo",
        "-c",
        "user.email=demo@localhost",
        "commit",
        "--quiet",
        "-am",
        "demo: start from an empty registry",
        cwd=checkout,
    )
    git("push", "--quiet", "origin", "main", cwd=checkout)
    return checkout, remote


def train(server: MlflowServer, workspace: Path, seed: int) -> None:
    output = run(
        BIN / "python",
        REPOSITORY / "images/trainer/train.py",
        "--tracking-uri",
        server.url,
        "--seed",
        str(seed),
        cwd=workspace,
    )
    for line in output.splitlines():
        if line.startswith(("run ", "registered ")):
            print(f"    {line}", flush=True)


def show_results(
    remote: Path, workspace: Path, server: MlflowServer, environment: dict[str, str]
) -> None:
    say("mlopsctl status (what Git pins on main, next to what MLflow's aliases say)")
    view = workspace / "view"
    if view.exists():
        shutil.rmtree(view)
    git("clone", "--quiet", str(remote), str(view), cwd=workspace)
    status = subprocess.run(
        [BIN / "mlopsctl", "status", "--repo", view, "--mlflow-uri", server.url],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    print(status.stdout, end="", flush=True)
    print("    (staging and production stay behind on main until their pull requests merge)")

    say("promotion commits on main, with their trailers")
    print(
        git("log", "--grep=^promote(", "--format=%h %s%n%(trailers:unfold)", "main", cwd=remote),
        end="",
        flush=True,
    )

    say("production's promotion branch (its policy asks for a pull request)")
    branch = f"mlopsctl/promote/production/{MODEL}"
    print(git("log", "-1", "--format=%h %s", branch, cwd=remote), end="", flush=True)

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
            server.url,
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


def serve_until_interrupted(
    processes: Processes,
    server: MlflowServer,
    remote: Path,
    workspace: Path,
    environment: dict[str, str],
) -> None:
    version = pinned_version(remote, "local")
    model_port, frontend_port = free_port(), free_port()
    say(f"serving models:/{MODEL}/{version} and the Streamlit frontend (Ctrl-C to stop)")
    processes.start(
        "the model server",
        [
            BIN / "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}/{version}",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(model_port),
        ],
        workspace / "model-server.log",
        # The scoring server is started as `uvicorn` from PATH.
        {
            **environment,
            "MLFLOW_TRACKING_URI": server.url,
            "PATH": f"{BIN}{os.pathsep}{environment.get('PATH', '')}",
        },
    )
    processes.start(
        "the Streamlit frontend",
        [
            BIN / "streamlit",
            "run",
            REPOSITORY / "images/streamlit/app.py",
            "--server.headless=true",
            "--server.address=127.0.0.1",
            f"--server.port={frontend_port}",
        ],
        workspace / "streamlit.log",
        {
            **environment,
            "MODEL_SERVER_URL": f"http://127.0.0.1:{model_port}",
            "MODEL_URI": f"models:/{MODEL}/{version}",
        },
    )
    print(f"    model server: http://127.0.0.1:{model_port}/invocations")
    print(f"    frontend:     http://127.0.0.1:{frontend_port}")
    print(f"    MLflow UI:    {server.url}", flush=True)
    while True:
        time.sleep(3600)


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
        help="also serve the pinned model and the frontend until Ctrl-C ($DEMO_SERVE=1)",
    )
    arguments = parser.parse_args(argv)
    workspace = arguments.workspace or Path(tempfile.mkdtemp(prefix="mlopsctl-demo-"))
    workspace.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "MLOPSCTL_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MLOPSCTL_TOOLS_DIR": os.environ.get("MLOPSCTL_TOOLS_DIR", str(REPOSITORY / ".tools")),
    }
    processes = Processes()
    started = time.monotonic()
    serving = False
    try:
        with interrupts_raise():
            say(f"starting a local MLflow server (sqlite, webhooks on) in {workspace}")
            server = start_server(workspace, f"sqlite:///{workspace / 'mlflow.db'}")
            processes.servers.append(server)
            print(f"    {server.url}", flush=True)

            say("throwaway clone of this repository behind a local bare remote")
            _checkout, remote = prepare_remote(workspace)
            print(f"    remote: {remote}", flush=True)

            say("starting the promoter (mlopsctl serve) and registering its webhook")
            port = free_port()
            promoter = processes.start(
                "the promoter",
                [
                    BIN / "mlopsctl",
                    "serve",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--remote",
                    remote,
                    "--mlflow-uri",
                    server.url,
                    "--interval",
                    "30",
                ],
                workspace / "promoter.log",
                environment,
            )
            wait_until(
                lambda: run_quietly(["curl", "-sf", f"http://127.0.0.1:{port}/healthz"]),
                "the promoter to answer",
            )
            print(
                "    "
                + run(
                    BIN / "mlopsctl",
                    "webhook",
                    "register",
                    "--url",
                    f"http://127.0.0.1:{port}/webhooks/mlflow",
                    "--mlflow-uri",
                    server.url,
                    env=environment,
                ).strip(),
                flush=True,
            )
            time.sleep(1.5)  # MLflow caches its webhook list for a second (see local_mlflow)

            say("training v1; the trainer moves @challenger, which local and staging follow")
            train(server, workspace, seed=7)
            took = wait_until(
                lambda: pinned_version(remote, "local") == "1", "local's pin to reach v1"
            )
            print(
                f"    {landed(took)}: the promoter committed local's pin (v0 -> v1) to main",
                flush=True,
            )

            say("training again: v2 and the next @challenger move")
            train(server, workspace, seed=11)
            took = wait_until(
                lambda: pinned_version(remote, "local") == "2", "local's pin to reach v2"
            )
            print(f"    {landed(took)}: the second commit (v1 -> v2)", flush=True)

            say("moving @champion, which production follows, to v2")
            server.client().set_registered_model_alias(MODEL, "champion", "2")
            branch = f"mlopsctl/promote/production/{MODEL}"
            took = wait_until(lambda: branch_pins(remote, branch) == "2", "the production branch")
            print(
                f"    production's pin went to branch {branch} {took:.1f} s later, not to main "
                f"(main still pins v{pinned_version(remote, 'production')})",
                flush=True,
            )

            if promoter.poll() is not None:
                raise RuntimeError("the promoter exited; see promoter.log")
            show_results(remote, workspace, server, environment)
            say(f"done in {time.monotonic() - started:.0f} s")
            if arguments.serve:
                serving = True
                serve_until_interrupted(processes, server, remote, workspace, environment)
        return 0
    except KeyboardInterrupt:
        if serving:  # Ctrl-C is how serving ends
            print("\nstopping what the demo started", flush=True)
            return 0
        print("\ninterrupted: stopping what the demo started", file=sys.stderr, flush=True)
        return 130
    except Exception as error:
        print(f"\ndemo failed: {error}\nlogs are in {workspace}", file=sys.stderr, flush=True)
        arguments.workspace = arguments.workspace or workspace  # keep the logs for reading
        return 1
    finally:
        processes.stop_all()
        if arguments.workspace is None:
            shutil.rmtree(workspace, ignore_errors=True)


def landed(seconds: float) -> str:
    """The webhook usually lands the commit while the trainer is still printing."""
    return "already there when the trainer returned" if seconds < 0.5 else f"{seconds:.1f} s later"


def run_quietly(command: Sequence[str]) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


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

"""`make demo` with DEMO_SERVE=1, driven like a person: commits, branch, served URLs, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.conftest import REPOSITORY


def git(remote: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=remote, check=True, capture_output=True, text=True
    ).stdout


def wait_for_answer(url: str, seconds: float = 120) -> None:
    """The served processes were just started: give them time to answer."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                assert answer.status == 200
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.5)


def test_the_demo_promotes_twice_then_proposes_production_then_serves(tmp_path: Path):
    workspace = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, str(REPOSITORY / "scripts/demo.py"), "--workspace", str(workspace)],
        env={**os.environ, "DEMO_SERVE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    lines: list[str] = []

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.monotonic() + 600
        while not any("frontend:" in line for line in lines):
            assert demo.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.5)
        urls = {
            line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
            for line in lines
            if line.strip().startswith(("model server:", "frontend:"))
        }
        model_server = urls["model server"].removesuffix("/invocations")
        wait_for_answer(f"{model_server}/ping")
        wait_for_answer(f"{urls['frontend']}/_stcore/health")
        demo.send_signal(signal.SIGINT)  # Ctrl-C ends serving
        assert demo.wait(timeout=120) == 0, "".join(lines)
    finally:
        if demo.poll() is None:  # a failed check must not leave the demo running
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=120)
            except subprocess.TimeoutExpired:
                demo.kill()
        reader.join(timeout=30)
    output = "".join(lines)
    remote = workspace / "platform.git"
    subjects = git(remote, "log", "--format=%s", "main").splitlines()
    assert [s for s in subjects if s.startswith("promote(")] == [
        "promote(local): iris-classifier v1 -> v2",
        "promote(local): iris-classifier v0 -> v1",
    ]
    trailers = git(remote, "log", "-1", "--format=%(trailers:unfold)", "main")
    fields = dict(line.split(": ", 1) for line in trailers.strip().splitlines())
    assert fields["Model"] == "iris-classifier"
    assert (fields["Model-Version"], fields["Previous-Version"]) == ("2", "1")
    assert fields["Environment"] == "local"
    assert fields["Source"] in ("webhook", "reconcile")  # the promoter, not a person
    assert len(fields["Run-Id"]) == 32

    def pin(path: str, revision: str = "main") -> str:
        text = git(remote, "show", f"{revision}:{path}")
        return text.split("models:/iris-classifier/")[1].split()[0]

    assert pin("overlays/local/model-server/kustomization.yaml") == "2"
    assert pin("overlays/production/model-server/kustomization.yaml") == "0"  # main untouched
    branch = "mlopsctl/promote/production/iris-classifier"
    assert pin("overlays/production/model-server/kustomization.yaml", branch) == "2"
    # What the demo prints for people: status, trailers, the rendered diff; and it cleaned up.
    assert "mlopsctl status" in output and "in sync" in output
    # The second local promotion through mlopsctl diff: versions, metrics, the rendered change.
    assert "model iris-classifier in local: v1 → v2 (follows @challenger)" in output
    assert re.search(r"metric +v1 +v2 +delta", output) and "signature: unchanged" in output
    assert "-  MODEL_URI: models:/iris-classifier/1" in output
    assert "+  MODEL_URI: models:/iris-classifier/2" in output
    for process in (
        "the promoter",
        "the model server",
        "the Streamlit frontend",
        "the MLflow server",
    ):
        assert f"stopped {process}" in output
    leftover = subprocess.run(["pgrep", "-f", str(workspace)], capture_output=True, check=False)
    assert leftover.stdout == b"", "the demo left processes running"

"""`make demo` with DEMO_SERVE=1, driven like a person: it brings the local environment up from
its manifests, trains twice in it, moves @champion in local's registry (which production's pins,
written only by production's own promoter, do not follow), prints where everything is served, and
Ctrl-C stops it all."""

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

from tests.support.paths import REPOSITORY


def git(remote: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=remote, check=True, capture_output=True, text=True
    ).stdout


def network_namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def answers(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return int(answer.status)


def test_the_demo_promotes_twice_in_the_platform_leaves_production_to_its_writer_then_serves(
    tmp_path: Path,
):
    workspace = tmp_path / "demo"
    namespaces_before = network_namespaces()
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
        while not any("Ctrl-C stops everything" in line for line in lines):
            assert demo.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.5)
        time.sleep(1)  # the URL lines follow the heading
        urls = dict(re.findall(r"^    ([A-Za-z ]+): (http://localhost:\d+)$", "".join(lines), re.M))
        assert set(urls) == {"MLflow UI", "frontend", "model server", "Prometheus"}, urls
        # Served from the platform's pods through port-forwards, while the demo keeps running.
        assert answers(f"{urls['model server']}/ping") == 200
        assert answers(f"{urls['frontend']}/_stcore/health") == 200
        assert answers(f"{urls['MLflow UI']}/health") == 200
        assert answers(f"{urls['Prometheus']}/-/ready") == 200
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
    assert fields["Source"] in ("webhook", "reconcile")  # the promoter in the platform
    assert len(fields["Run-Id"]) == 32

    def pin(path: str, revision: str = "main") -> str:
        text = git(remote, "show", f"{revision}:{path}")
        return text.split("models:/iris-classifier/")[1].split()[0]

    assert pin("overlays/local/model-server/kustomization.yaml") == "2"
    # One writer per pin: local's promoter owns local only, so @champion moved in local's
    # registry reaches neither production's pin on main nor a production branch.
    assert pin("overlays/production/model-server/kustomization.yaml") == "0"
    assert pin("overlays/staging/model-server/kustomization.yaml") == "0"
    assert git(remote, "branch", "--list", "mlopsctl/promote/*") == ""
    assert re.search(
        r"promoter \(MLOPSCTL_ENVIRONMENTS=local, "
        r"overlays/local/promoter/deployment-patch\.yaml\): "
        r"[0-9.]+ s and two full passes later, production's pin on main is still v0 and there is "
        r"no branch mlopsctl/promote/production/iris-classifier",
        output,
    ), output
    # The model server answered from its placeholder first, then from each promoted version.
    assert "before any promotion: HTTP 503: NO_MODEL_PROMOTED" in output
    assert len(re.findall(r"the model server now says (setosa|versicolor|virginica)", output)) == 2
    # What the demo prints for people: status, trailers, the rendered diff.
    assert "mlopsctl status" in output and "in sync" in output
    assert "model iris-classifier in local: v1 → v2 (follows @challenger)" in output
    assert re.search(r"metric +v1 +v2 +delta", output) and "signature: unchanged" in output
    assert "-  MODEL_URI: models:/iris-classifier/1" in output
    assert "+  MODEL_URI: models:/iris-classifier/2" in output
    # Ctrl-C stopped everything the run started: no process, no network namespace.
    assert "stopped the local environment" in output
    assert network_namespaces() <= namespaces_before
    leftover = subprocess.run(["pgrep", "-f", str(workspace)], capture_output=True, check=False)
    assert leftover.stdout == b"", "the demo left processes running"

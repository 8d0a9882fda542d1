"""`make demo`, run non-interactively: two commits on main, their trailers, production's branch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPOSITORY


def git(remote: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=remote, check=True, capture_output=True, text=True
    ).stdout


def test_the_demo_promotes_twice_then_proposes_production(tmp_path: Path):
    workspace = tmp_path / "demo"
    completed = subprocess.run(
        [sys.executable, str(REPOSITORY / "scripts/demo.py"), "--workspace", str(workspace)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
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
    assert "-  MODEL_URI: models:/iris-classifier/0" in output
    assert "+  MODEL_URI: models:/iris-classifier/2" in output
    assert "stopped the promoter" in output and "stopped the MLflow server" in output
    leftover = subprocess.run(["pgrep", "-f", str(workspace)], capture_output=True, check=False)
    assert leftover.stdout == b"", "the demo left processes running"

"""Eight promoter processes on one bare remote, 24 promotions, each asked for twice: each lands
exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.mlflow_fixtures import MlflowServer
from tests.support.trees import MINIMAL_CONFIG, write_tree

MODELS = [f"race-{index:02d}" for index in range(24)]
PROCESSES = 8
CONFIG = (
    MINIMAL_CONFIG
    + """\
promotion:
  environments:
    local:
      mode: commit
"""
)


def git(directory: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=directory, check=True, capture_output=True, text=True
    ).stdout


def pinned_tree() -> str:
    literals = "".join(
        f"      # mlopsctl: model {model}@challenger\n      - {model.upper().replace('-', '_')}"
        f"=models:/{model}/1\n"
        for model in MODELS
    )
    return (
        "namespace: race\n"
        "configMapGenerator:\n"
        "  - name: pins\n"
        "    options:\n"
        "      labels:\n"
        "        app.kubernetes.io/name: pins\n"
        "        app.kubernetes.io/component: model\n"
        "        app.kubernetes.io/part-of: race\n"
        "    literals:\n" + literals
    )


def test_concurrent_promoters_land_every_promotion_once(
    tmp_path: Path, mlflow_server: MlflowServer
):
    for model in MODELS:
        mlflow_server.register(model, {"accuracy": 0.9})
        mlflow_server.register(model, {"accuracy": 0.95}, alias="challenger")
    checkout = write_tree(
        tmp_path / "checkout",
        {"mlopsctl.yaml": CONFIG, "overlays/local/models/kustomization.yaml": pinned_tree()},
    )
    git(checkout, "init", "--quiet", "--initial-branch=main")
    git(checkout, "add", ".")
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@example.test", "commit", "-qm", "pins")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(checkout), str(remote))

    # Every model is promoted by two processes at once, so half the runs race for nothing.
    assignments: list[list[str]] = [[] for _ in range(PROCESSES)]
    for index, model in enumerate(MODELS):
        assignments[index % PROCESSES].append(model)
        assignments[(index + 3) % PROCESSES].append(model)
    mlopsctl = Path(sys.executable).parent / "mlopsctl"
    script = (
        'status=0; for model in "$@"; do "$MLOPSCTL" promote --repo "$CHECKOUT" --remote "$REMOTE" '
        '--mlflow-uri "$MLFLOW" --env local --model "$model" || status=1; done; exit $status'
    )
    environment = {
        **os.environ,
        "MLOPSCTL": str(mlopsctl),
        "CHECKOUT": str(checkout),
        "REMOTE": str(remote),
        "MLFLOW": mlflow_server.url,
    }
    # Each process keeps its own mirror, fetched and reset before each of its runs, as a user's
    # or a workflow runner's cache keeps one: the races meet on the remote, not in a checkout.
    workers = [
        subprocess.Popen(
            ["bash", "-c", script, "worker", *models],
            env={**environment, "MLOPSCTL_MIRROR_DIR": str(tmp_path / f"mirrors-{index}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index, models in enumerate(assignments)
    ]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * PROCESSES, "\n".join(outputs)

    subjects = git(remote, "log", "--format=%s", "main").splitlines()
    promotions = [subject for subject in subjects if subject.startswith("promote(local): ")]
    assert sorted(promotions) == sorted(f"promote(local): {model} v1 -> v2" for model in MODELS)
    assert git(remote, "rev-list", "--merges", "main") == ""  # linear history
    final = git(remote, "show", "main:overlays/local/models/kustomization.yaml")
    for model in MODELS:
        assert f"=models:/{model}/2\n" in final, model  # no update lost
    for index in range(PROCESSES):
        assert len(list((tmp_path / f"mirrors-{index}").glob("remote.git-*/.git"))) == 1
    assert not any("fresh clone" in output for output in outputs), outputs
    replans = sum(output.count("moved on; planning again") for output in outputs)
    print(f"{len(promotions)} promotions, {replans} push races planned again")

"""The GitHub workflows are valid (checked offline against the vendored schema) and careful."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.paths import REPOSITORY

WORKFLOWS = sorted((REPOSITORY / ".github" / "workflows").glob("*.yaml"))
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")


def load(name: str) -> dict:
    document = yaml.safe_load((REPOSITORY / ".github" / "workflows" / name).read_text())
    # YAML 1.1 reads the key `on` as True; GitHub reads it as "on".
    document["on"] = document.pop(True, document.get("on"))
    return document


def test_there_are_workflows():
    assert [path.name for path in WORKFLOWS] == [
        "ci.yaml",
        "e2e.yaml",
        "images.yaml",
        "pr-diff.yaml",
        "promote.yaml",
    ]


def _mlopsctl_commands(workflow: Path) -> list[list[str]]:
    """Every `.venv/bin/mlopsctl ...` command line in the workflow's run scripts, as argv."""
    commands = []
    for job in yaml.safe_load(workflow.read_text())["jobs"].values():
        for step in job.get("steps", []):
            script = step.get("run", "").replace("\\\n", " ")
            for line in script.splitlines():
                if ".venv/bin/mlopsctl " not in line:
                    continue
                words = shlex.split(line.split(".venv/bin/mlopsctl ", 1)[1].split("||")[0])
                commands.append(
                    [
                        re.sub(r"\$\{?\w+\}?", "placeholder", word)
                        for word in words
                        if not word.startswith("${") or not word.endswith("[@]}")
                    ]
                )
    return commands


def test_workflows_call_mlopsctl_with_options_it_has():
    from mlopsctl.cli import build_parser

    commands = [command for path in WORKFLOWS for command in _mlopsctl_commands(path)]
    assert {command[0] for command in commands} >= {"diff", "promote", "set-image", "validate"}
    for command in commands:
        build_parser().parse_args(command)  # exits (fails the test) on an unknown option


def test_pr_diff_comments_once_and_keeps_the_full_diff():
    workflow = load("pr-diff.yaml")
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert set(workflow["on"]) == {"pull_request"}
    assert "overlays/**" in workflow["on"]["pull_request"]["paths"]
    [command] = _mlopsctl_commands(REPOSITORY / ".github/workflows/pr-diff.yaml")
    assert {"--format", "markdown", "--full-diff", "--output"} <= set(command)
    uploads = [
        s for s in workflow["jobs"]["diff"]["steps"] if "upload-artifact" in s.get("uses", "")
    ]
    assert uploads and uploads[0]["with"]["path"] == "build/diff/"


def test_image_pins_do_not_retrigger_the_image_workflow():
    workflow = load("images.yaml")
    paths = workflow["on"]["push"]["paths"]
    for pin_file in (
        "overlays/local/streamlit/kustomization.yaml",
        "base/argocd-apps/streamlit.yaml",
    ):
        assert not any(fnmatch.fnmatch(pin_file, pattern) for pattern in paths), pin_file
    build = workflow["jobs"]["build"]
    assert {entry["name"] for entry in build["strategy"]["matrix"]["include"]} == {
        path.name for path in (REPOSITORY / "images").iterdir() if path.is_dir()
    }
    assert build["permissions"]["packages"] == "write"


def test_promote_runs_on_a_schedule_and_on_dispatch():
    workflow = load("promote.yaml")
    assert {"schedule", "repository_dispatch", "workflow_dispatch"} <= set(workflow["on"])
    assert workflow["concurrency"]["cancel-in-progress"] is False
    # One writer per pin: the schedule writes only what no promoter owns.
    [step] = [
        s for s in workflow["jobs"]["reconcile"]["steps"] if "mlopsctl promote" in s.get("run", "")
    ]
    assert "promote --writer cli " in step["run"]


def test_e2e_pins_kind_dumps_logs_and_cleans_up():
    workflow = load("e2e.yaml")
    assert re.fullmatch(
        r"kindest/node:v1\.35\.\d+@sha256:[0-9a-f]{64}", workflow["env"]["KIND_NODE_IMAGE"]
    )
    steps = workflow["jobs"]["e2e"]["steps"]
    assert any(step.get("if") == "failure()" and "logs" in step.get("run", "") for step in steps)
    assert steps[-1]["if"] == "always()" and "kind delete cluster" in steps[-1]["run"]
    assert (REPOSITORY / "scripts" / "e2e_branch.py").is_file()


def test_workflows_match_the_github_workflow_schema():
    check = Path(sys.executable).parent / "check-jsonschema"
    completed = subprocess.run(
        [str(check), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("on: push\njobs:\n  build:\n    runs-on: ubuntu-24.04\n    stepz: []\n")
    check = Path(sys.executable).parent / "check-jsonschema"
    completed = subprocess.run(
        [str(check), "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 1


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_workflows_pin_actions_and_limit_permissions(workflow: Path):
    document = yaml.safe_load(workflow.read_text())
    assert "permissions" in document, "least privilege: declare permissions"
    assert "concurrency" in document
    for job_name, job in document["jobs"].items():
        assert "timeout-minutes" in job, job_name
        for step in job.get("steps", []):
            if "uses" in step:
                assert PINNED_ACTION.match(step["uses"]), step["uses"]

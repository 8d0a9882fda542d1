"""The GitHub workflows are valid (checked offline against the vendored schema) and careful."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPOSITORY

WORKFLOWS = sorted((REPOSITORY / ".github" / "workflows").glob("*.yaml"))
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")


def test_there_are_workflows():
    assert "ci.yaml" in [path.name for path in WORKFLOWS]


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

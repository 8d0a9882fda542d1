"""The kubeconform path of `validate`.

kubeconform cannot be installed on this machine (no reachable registry ships it), so this test
puts a thin stand-in named `kubeconform` on PATH: it records its arguments and answers with a
report in kubeconform's JSON format. What is tested is mlopsctl's side: that kubeconform is
preferred when present, called strictly for the pinned Kubernetes version, and that its report
becomes findings. The GitHub workflow runs the real kubeconform.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_validate_policies import good_deployment, write_fixture

STAND_IN = """#!/bin/sh
printf '%s\\n' "$@" > "{arguments}"
cat > "{received}"
cat <<'REPORT'
{report}
REPORT
exit 1
"""


def test_kubeconform_on_path_checks_builtin_kinds(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    report = {
        "resources": [
            {
                "filename": "stdin",
                "kind": "Deployment",
                "name": "web",
                "namespace": "shop",
                "version": "apps/v1",
                "status": "statusInvalid",
                "msg": "problem validating schema",
                "validationErrors": [
                    {"path": "/spec/replicas", "msg": "expected integer, but got string"}
                ],
            }
        ],
        "summary": {"valid": 0, "invalid": 1, "errors": 0, "skipped": 0},
    }
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "kubeconform"
    stand_in.write_text(
        STAND_IN.format(
            arguments=tmp_path / "arguments",
            received=tmp_path / "received",
            report=json.dumps(report),
        )
    )
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    result = cli(
        "validate",
        "--repo",
        str(write_fixture(tmp_path / "repo", [good_deployment()])),
        "--format",
        "json",
    )
    assert result.exit_code == 1
    output = result.json()
    assert output["schema_checker"].startswith("kubeconform (")
    assert [(f["check"], f["resource"], f["field"], f["file"]) for f in output["findings"]] == [
        ("schema", "Deployment/shop/web", "spec.replicas", "web/workload.yaml")
    ]
    arguments = (tmp_path / "arguments").read_text().split("\n")
    assert "-strict" in arguments
    assert arguments[arguments.index("-kubernetes-version") + 1] == "1.35.0"
    assert "-ignore-missing-schemas" in arguments  # custom kinds stay with the project schemas
    assert "kind: Deployment" in (tmp_path / "received").read_text()

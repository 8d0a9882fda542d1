"""scripts/e2e_branch.py: the e2e workflow's copy of the platform follows its own branch."""

from __future__ import annotations

from pathlib import Path

import yaml

from e2e_branch import main
from mlopsctl.base import kustomize
from mlopsctl.base.config import load_config
from mlopsctl.base.resources import parse_render
from mlopsctl.base.toolchain import resolve
from tests.support.paths import TOOLS_DIR

REMOTE = "https://github.com/someone/their-fork.git"
BRANCH = "e2e/1234-1"


def test_every_reference_to_the_repository_follows_the_branch(platform_copy: Path, cli):
    original = load_config(platform_copy).repository_url
    assert main([REMOTE, BRANCH, "--repo", str(platform_copy)]) == 0
    for path in platform_copy.rglob("*.yaml"):
        assert original not in path.read_text(), path
    config = load_config(platform_copy)
    assert (config.repository_url, config.promotion.branch) == (REMOTE, BRANCH)

    tools = resolve(TOOLS_DIR)
    for root in ("apps/local", "clusters/local", "overlays/local/promoter"):
        [result] = kustomize.render_roots(platform_copy, [root], tools)
        for resource in parse_render(root, result.output):
            spec = resource.body.get("spec", {})
            sources = [spec["source"]] if "source" in spec else spec.get("sources", [])
            for source in sources if resource.kind == "Application" else []:
                if "path" in source:  # this repository: follows the branch
                    assert (source["repoURL"], source["targetRevision"]) == (REMOTE, BRANCH)
                elif "chart" in source:  # charts stay at their exact versions
                    assert source["targetRevision"][0].isdigit(), source
            if resource.kind == "Deployment":
                env = {
                    item["name"]: item.get("value")
                    for item in spec["template"]["spec"]["containers"][0]["env"]
                }
                assert (env["MLOPSCTL_REMOTE"], env["MLOPSCTL_BRANCH"]) == (REMOTE, BRANCH)
    # Still a valid platform: the AppProjects allow the new repository.
    result = cli("validate", "--repo", str(platform_copy))
    assert result.exit_code == 0, result.stdout + result.stderr
    # Comments and layout are kept: only the values changed.
    text = (platform_copy / "mlopsctl.yaml").read_text()
    assert f"  branch: {BRANCH}\n" in text and "# What mlopsctl needs to know" in text
    assert yaml.safe_load(text)["promotion"]["environments"]["local"]["mode"] == "commit"


def test_a_branch_name_that_is_not_plain_is_refused(platform_copy: Path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_request:
        main([REMOTE, "e2e/../main", "--repo", str(platform_copy)])
    assert exit_request.value.code == 2
    assert "is not a plain branch name" in capsys.readouterr().err

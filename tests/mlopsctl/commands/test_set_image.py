"""`mlopsctl set-image` through the validate, commit and push path, on a real bare remote."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.paths import TOOLS_DIR
from tests.support.platform_fixtures import Platform, git

DIGEST = "sha256:" + "ab" * 32


def set_image(cli, platform: Platform, *arguments: str):
    return cli(
        "set-image", "--repo", str(platform.checkout), "--remote", str(platform.remote), *arguments
    )


def rendered_image(platform: Platform, environment: str, branch: str = "main") -> str:
    checkout = platform.remote.parent / f"render-{environment}"
    if not checkout.exists():
        git(platform.remote.parent, "clone", "--quiet", str(platform.remote), str(checkout))
    git(checkout, "fetch", "--quiet", "origin", branch)
    git(checkout, "checkout", "--quiet", "FETCH_HEAD")
    output = subprocess.run(
        [
            str(TOOLS_DIR / "bin/kubectl"),
            "kustomize",
            str(checkout / f"overlays/{environment}/model-server"),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(line.split("image: ")[1] for line in output.splitlines() if "image: " in line)


def test_a_new_tag_is_committed_for_a_direct_commit_environment(cli, platform):
    result = set_image(cli, platform, "model-server", "0.2.0", "--env", "local")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert platform.log()[0] == "set-image(local): model-server 0.1.0 -> 0.2.0"
    assert platform.trailers()["Image-Version"] == "0.2.0"
    assert (
        rendered_image(platform, "local") == "ghcr.io/example-org/mlops-platform/model-server:0.2.0"
    )
    assert rendered_image(platform, "staging").endswith(":0.1.0")
    again = set_image(cli, platform, "model-server", "0.2.0", "--env", "local")
    assert "nothing to do" in again.stdout


def test_a_digest_keeps_the_tag_as_a_comment_everywhere_it_is_used(cli, platform):
    result = set_image(cli, platform, "model-server", f"@{DIGEST}")
    assert result.exit_code == 0, result.stdout
    text = platform.show("overlays/local/model-server/kustomization.yaml")
    assert f"    digest: {DIGEST}\n    # tag: 0.1.0\n" in text
    assert (
        rendered_image(platform, "local")
        == f"ghcr.io/example-org/mlops-platform/model-server@{DIGEST}"
    )
    for environment in ("staging", "production"):
        branch = f"mlopsctl/set-image/{environment}/model-server"
        assert rendered_image(platform, environment, branch).endswith(f"@{DIGEST}")
        assert (
            platform.log(branch)[0] == f"set-image({environment}): model-server 0.1.0 -> @{DIGEST}"
        )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("model-server", "1.0;rm -rf /"), "TAG '1.0;rm -rf /' is not valid"),
        (("model-server", "@sha256:xyz"), "DIGEST 'sha256:xyz' is not valid"),
        (("../model-server", "1.0"), "NAME '../model-server' is not valid"),
        (("no-such-image", "1.0"), "no overlay in"),
    ],
)
def test_bad_arguments_are_refused_naming_them(cli, platform, arguments, message):
    before = platform.log()
    result = set_image(cli, platform, *arguments)
    assert result.exit_code == 2
    assert message in result.stderr
    assert platform.log() == before

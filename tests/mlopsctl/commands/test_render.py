"""`mlopsctl render [ROOT...]`: every root built by the pinned kustomize, to stdout or one file
per root, byte-stable; a root that does not build is named and fails the run, one that needs the
network is named and left out unless --network."""

from __future__ import annotations

from pathlib import Path

from tests.support.paths import REPOSITORY
from tests.support.trees import MINIMAL_CONFIG, write_tree

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  colour: blue
"""
REMOTE_INSTALL = "https://raw.githubusercontent.com/example-org/nowhere/v1/install.yaml"


def test_render_out_writes_one_file_per_root(cli, tmp_path: Path):
    out = tmp_path / "out"
    result = cli("render", "--repo", str(REPOSITORY), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.yaml"))
    assert "overlays/production/model-server.yaml" in written
    assert "apps/staging.yaml" in written
    # Roots that need the network are named, not silently dropped.
    for environment in ("local", "staging", "production"):
        assert f"clusters/{environment}/argocd: not rendered, needs the network" in result.stderr
    again = tmp_path / "again"
    cli("render", "--repo", str(REPOSITORY), "--out", str(again))
    for relative in written:
        assert (out / relative).read_bytes() == (again / relative).read_bytes()


def test_render_to_stdout_marks_each_root(cli):
    result = cli(
        "render", "--repo", str(REPOSITORY), str(REPOSITORY / "overlays/local/model-server")
    )
    assert result.exit_code == 0
    assert result.stdout.startswith("# mlopsctl render: overlays/local/model-server\n---\n")
    assert "kind: Deployment" in result.stdout


def test_a_root_that_does_not_build_fails_render_with_its_name(cli, tmp_path: Path):
    repository = write_tree(
        tmp_path,
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "good/kustomization.yaml": "resources:\n  - configmap.yaml\n",
            "good/configmap.yaml": CONFIGMAP,
            "broken/kustomization.yaml": "resources:\n  - missing.yaml\n",
        },
    )
    result = cli("render", "--repo", str(repository), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "broken: does not render:" in result.stderr
    assert "missing.yaml" in result.stderr
    assert (tmp_path / "out" / "good.yaml").is_file()


def test_a_root_that_needs_the_network_is_named_and_left_out(cli, tmp_path: Path):
    repository = write_tree(
        tmp_path,
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "good/kustomization.yaml": "resources:\n  - configmap.yaml\n",
            "good/configmap.yaml": CONFIGMAP,
            "remote/kustomization.yaml": f"resources:\n  - {REMOTE_INSTALL}\n",
        },
    )
    result = cli("render", "--repo", str(repository))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == (
        f"remote: not rendered, needs the network (kustomization.yaml: resources fetches "
        f"{REMOTE_INSTALL}); pass --network to render it\n"
    )
    assert result.stdout.startswith("# mlopsctl render: good\n---\n")
    assert "# mlopsctl render: remote" not in result.stdout


def test_an_out_path_that_is_a_file_is_refused_naming_it(cli, tmp_path: Path):
    repository = write_tree(
        tmp_path / "repository",
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "good/kustomization.yaml": "resources:\n  - configmap.yaml\n",
            "good/configmap.yaml": CONFIGMAP,
        },
    )
    taken = write_tree(tmp_path, {"rendered.yaml": "not a directory\n"}) / "rendered.yaml"
    result = cli("render", "--repo", str(repository), "--out", str(taken))
    assert result.exit_code == 2
    assert str(taken) in result.stderr

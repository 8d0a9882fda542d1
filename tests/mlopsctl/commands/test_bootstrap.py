"""`mlopsctl bootstrap`'s own checks, made before the cluster is touched: the environment, its
cluster directories, the kube context and the renders; each refusal names what is wrong. The
bootstrap itself, against a real kube-apiserver, is tested in tests/mlopsctl/bootstrap/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support.cli import CliResult
from tests.support.paths import REPOSITORY
from tests.support.trees import MINIMAL_CONFIG, write_tree

# Nothing listens there: a bootstrap that got as far as the cluster would say it cannot reach it.
UNREACHABLE_SERVER = "https://127.0.0.1:9"


def kubeconfig(path: Path, context: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": UNREACHABLE_SERVER}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
                "current-context": context,
            }
        )
    )
    return path


def cluster_tree(root: Path, argocd: str = "resources: []\n") -> Path:
    return write_tree(
        root,
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            "clusters/local/argocd/kustomization.yaml": argocd,
            "clusters/local/kustomization.yaml": "resources: []\n",
        },
    )


@pytest.mark.parametrize(
    ("timeout", "said"),
    [
        ("nan", "must be a positive, finite number of seconds: nan"),
        ("inf", "must be a positive, finite number of seconds: inf"),
        ("0", "must be a positive, finite number of seconds: 0"),
        ("-5", "must be a positive, finite number of seconds: -5"),
        ("soon", "'soon' is not a number of seconds"),
    ],
)
def test_a_timeout_that_never_ends_or_is_not_one_is_refused(
    cli: Callable[..., CliResult], timeout: str, said: str
) -> None:
    result = cli("bootstrap", "--env", "local", "--repo", str(REPOSITORY), "--timeout", timeout)
    assert result.exit_code == 2
    assert "--timeout" in result.stderr and said in result.stderr, result.stderr


def test_the_environment_is_required(cli: Callable[..., CliResult]):
    result = cli("bootstrap", "--repo", str(REPOSITORY))
    assert result.exit_code == 2
    assert "the following arguments are required: --env" in result.stderr


def test_an_environment_without_its_cluster_directory_is_refused(
    cli: Callable[..., CliResult], tmp_path: Path
):
    repository = write_tree(tmp_path, {"mlopsctl.yaml": MINIMAL_CONFIG})
    result = cli("bootstrap", "--env", "local", "--repo", str(repository))
    assert result.exit_code == 2
    assert result.stderr == (
        f"mlopsctl: error: {repository / 'clusters/local/argocd'}: no kustomization.yaml to apply\n"
    )


def test_a_context_that_is_not_the_environments_is_refused_before_connecting(
    cli: Callable[..., CliResult], tmp_path: Path
):
    repository = cluster_tree(tmp_path / "repository")
    config = kubeconfig(tmp_path / "kubeconfig", "gke-staging")
    result = cli(
        "bootstrap", "--env", "local", "--repo", str(repository), "--kubeconfig", str(config)
    )
    assert result.exit_code == 2
    assert "context 'gke-staging' does not look like environment 'local''s cluster" in result.stderr
    assert result.stderr.endswith("; nothing was changed\n")
    assert "cannot reach" not in result.stderr


def test_a_cluster_root_that_does_not_render_is_named_before_connecting(
    cli: Callable[..., CliResult], tmp_path: Path
):
    repository = cluster_tree(tmp_path / "repository", "resources:\n  - missing.yaml\n")
    config = kubeconfig(tmp_path / "kubeconfig", "kind-local")
    result = cli(
        "bootstrap", "--env", "local", "--repo", str(repository), "--kubeconfig", str(config)
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("mlopsctl: error: clusters/local/argocd does not render: ")
    assert "missing.yaml" in result.stderr
    assert "cannot reach" not in result.stderr and result.stdout == ""

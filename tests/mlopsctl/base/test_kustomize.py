from pathlib import Path

from mlopsctl.base import kustomize, toolchain
from mlopsctl.base.config import load_config
from tests.support.paths import REPOSITORY, TOOLS_DIR
from tests.support.trees import write_tree

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  colour: blue
"""


def test_every_root_of_the_repository_is_found():
    roots = kustomize.discover_roots(REPOSITORY, load_config(REPOSITORY).render_exclude)
    for environment in ("local", "staging", "production"):
        assert f"apps/{environment}" in roots
        assert f"clusters/{environment}" in roots
        assert f"clusters/{environment}/argocd" in roots
        for component in (
            "platform",
            "postgres",
            "mlflow-tracking",
            "model-server",
            "streamlit",
            "promoter",
        ):
            assert f"overlays/{environment}/{component}" in roots
    # Components are not buildable on their own, and fixtures and tooling are not platform.
    assert "base/mlflow-tracking/gcs-artifacts" not in roots
    assert not [root for root in roots if root.startswith(("tests", ".tools", ".venv"))]


def test_remote_resources_and_charts_need_the_network(tmp_path: Path):
    write_tree(
        tmp_path,
        {
            "remote/kustomization.yaml": "resources:\n  - https://example.test/install.yaml\n",
            "chart/kustomization.yaml": "helmCharts:\n  - name: podinfo\n    version: 6.0.0\n",
            "wraps-remote/kustomization.yaml": "resources:\n  - ../remote\n",
            "local/kustomization.yaml": "resources:\n  - configmap.yaml\n",
            "local/configmap.yaml": CONFIGMAP,
        },
    )
    assert kustomize.network_needs(tmp_path / "remote") == [
        "kustomization.yaml: resources fetches https://example.test/install.yaml"
    ]
    assert "helmCharts pulls chart 'podinfo'" in kustomize.network_needs(tmp_path / "chart")[0]
    assert kustomize.network_needs(tmp_path / "wraps-remote") == [
        "../remote/kustomization.yaml: resources fetches https://example.test/install.yaml"
    ]
    assert kustomize.network_needs(tmp_path / "local") == []


def test_renders_are_byte_stable_across_runs():
    roots = kustomize.discover_roots(REPOSITORY, load_config(REPOSITORY).render_exclude)
    tools = toolchain.resolve(TOOLS_DIR)
    first = kustomize.render_roots(REPOSITORY, roots, tools)
    second = kustomize.render_roots(REPOSITORY, list(reversed(roots)), tools, jobs=1)
    by_root = {result.root: result.output for result in second}
    assert [result.root for result in first] == roots
    for result in first:
        assert result.error is None, f"{result.root}: {result.error}"
        assert result.warnings == [], f"{result.root}: {result.warnings}"
        assert result.output == by_root[result.root], result.root
    assert sum(1 for result in first if result.skipped) == 3  # the Argo CD installs

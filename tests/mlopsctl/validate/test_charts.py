"""`mlopsctl validate --network` renders the Helm charts Applications install, as Argo CD does,
and holds their workloads to the requests-and-limits and pinned-images policies. The chart
repository is a real one (`helm package` + `helm repo index`) served on loopback."""

from __future__ import annotations

import functools
import http.server
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlopsctl.base import toolchain
from tests.support.loopback import serving
from tests.support.paths import TOOLS_DIR
from tests.support.trees import write_tree

CHART = {
    "demo/Chart.yaml": "apiVersion: v2\nname: demo\nversion: 1.2.3\n",
    "demo/values.yaml": "image: ghcr.io/example/demo:latest\nresources: {}\n",
    "demo/templates/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  namespace: {{ .Release.Namespace }}
spec:
  selector:
    matchLabels: {app: demo}
  template:
    metadata:
      labels: {app: demo}
    spec:
      containers:
        - name: demo
          image: {{ .Values.image }}
          resources: {{- toYaml .Values.resources | nindent 12 }}
""",
}


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def chart_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Helm chart repository on loopback holding chart demo 1.2.3."""
    helm = toolchain.resolve(TOOLS_DIR).helm
    assert helm is not None, "helm is installed by `mlopsctl tools install`"
    sources = write_tree(tmp_path_factory.mktemp("chart"), CHART)
    served = tmp_path_factory.mktemp("repository")
    for command in (
        [helm, "package", str(sources / "demo"), "--destination", str(served)],
        [helm, "repo", "index", str(served)],
    ):
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    with serving(functools.partial(QuietFiles, directory=str(served))) as url:  # type: ignore[arg-type]
        yield url


def platform(root: Path, chart_url: str, values: str, version: str = "1.2.3") -> Path:
    own = "https://example.test/platform.git"
    return write_tree(
        root,
        {
            "mlopsctl.yaml": (
                f'repository:\n  url: {own}\nenvironments: [local]\nkubernetesVersion: "1.35"\n'
            ),
            "apps/local/kustomization.yaml": "resources:\n  - demo.yaml\n",
            "apps/local/demo.yaml": f"""\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: demo-local
  namespace: argocd
spec:
  project: default
  sources:
    - repoURL: {chart_url}
      chart: demo
      targetRevision: {version}
      helm:
        releaseName: demo
        valueFiles:
          - $values/values/demo.yaml
    - repoURL: {own}
      targetRevision: main
      ref: values
  destination:
    server: https://kubernetes.default.svc
    namespace: tools
""",
            "values/demo.yaml": values,
        },
    )


def chart_findings(cli, repository: Path) -> list[dict[str, Any]]:
    result = cli("validate", "--repo", str(repository), "--network", "--format", "json")
    return [
        finding
        for finding in result.json()["findings"]
        if finding["check"] in ("requests-and-limits", "pinned-images", "renders")
    ]


def test_a_chart_workload_without_resources_or_a_pinned_image_is_refused(
    cli, tmp_path: Path, chart_repository: str
):
    found = chart_findings(cli, platform(tmp_path, chart_repository, "{}\n"))
    assert {f["check"] for f in found} == {"requests-and-limits", "pinned-images"}
    for finding in found:
        assert finding["file"] == "apps/local/demo.yaml"
        assert finding["resource"] == "Deployment/tools/demo"  # the release name and namespace
        assert finding["message"].startswith("chart demo 1.2.3 (demo-local): ")
    assert any("ghcr.io/example/demo:latest" in f["message"] for f in found)


def test_the_values_files_of_the_application_fix_them(cli, tmp_path: Path, chart_repository: str):
    values = """\
image: ghcr.io/example/demo:1.4.0
resources:
  requests: {cpu: 10m, memory: 16Mi}
  limits: {cpu: 100m, memory: 32Mi}
"""
    assert chart_findings(cli, platform(tmp_path, chart_repository, values)) == []


def test_a_chart_version_the_repository_does_not_have_is_named(
    cli, tmp_path: Path, chart_repository: str
):
    found = chart_findings(cli, platform(tmp_path, chart_repository, "{}\n", version="9.9.9"))
    [finding] = found
    assert finding["check"] == "renders"
    assert finding["field"] == "spec.sources[0]"
    assert "chart demo 9.9.9 (demo-local) does not render" in finding["message"]
    assert "9.9.9" in finding["message"]


def test_without_network_no_chart_is_fetched(cli, tmp_path: Path):
    # A repository URL nothing answers on: rendering would fail, so not rendering is shown.
    repository = platform(tmp_path, "http://127.0.0.1:9", "{}\n")
    result = cli("validate", "--repo", str(repository), "--format", "json")
    assert [f for f in result.json()["findings"] if f["check"] == "renders"] == []

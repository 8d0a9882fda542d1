"""`mlopsctl validate --server` against a real kube-apiserver (tests/support/kube_apiserver.py): the
platform's every rendered resource is accepted by Kubernetes 1.35 itself, with the project's
CRDs installed; and what only the server can see (a selector its template does not match, an
unknown field under strict validation) becomes a finding naming the file, resource and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPOSITORY
from tests.support.workload_fixture import good_deployment, write_fixture


def server_validate(cli, repository: Path, kubeconfig: Path, *extra: str) -> tuple[int, Any]:
    result = cli(
        "validate",
        "--repo",
        str(repository),
        "--server",
        "--kubeconfig",
        str(kubeconfig),
        "--prepare-server",
        "--format",
        "json",
        *extra,
    )
    return result.exit_code, result.json()


@pytest.mark.slow
def test_the_platform_is_accepted_by_the_api_server(cli, api_server):
    exit_code, report = server_validate(cli, REPOSITORY, api_server.kubeconfig)
    assert report["findings"] == []
    assert exit_code == 0
    assert report["resources_checked"] > 150


def test_a_selector_the_template_does_not_match_is_refused_by_the_server_only(
    cli, tmp_path: Path, api_server
):
    deployment = good_deployment()
    deployment["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "not-web"}
    repository = write_fixture(tmp_path, [deployment])
    offline = cli("validate", "--repo", str(repository), "--format", "json").json()
    assert offline["findings"] == []  # schemas and policies see nothing wrong
    exit_code, report = server_validate(cli, repository, api_server.kubeconfig)
    assert exit_code == 1
    [finding] = report["findings"]
    assert finding["check"] == "server"
    assert (finding["file"], finding["resource"]) == ("web/workload.yaml", "Deployment/shop/web")
    assert finding["field"] == "spec.template.metadata.labels"
    assert "`selector` does not match template `labels`" in finding["message"]


def test_an_unknown_field_is_refused_under_strict_field_validation(cli, tmp_path: Path, api_server):
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
            "endpoints": [{"port": "http", "intervall": "30s"}],
        },
    }
    repository = write_fixture(tmp_path, [good_deployment(), monitor])
    exit_code, report = server_validate(cli, repository, api_server.kubeconfig)
    assert exit_code == 1
    server = [f for f in report["findings"] if f["check"] == "server"]
    assert [(f["resource"], f["field"]) for f in server] == [
        ("ServiceMonitor/shop/web", "spec.endpoints[0].intervall")
    ]
    assert server[0]["message"] == "the API server refuses it: field not declared in schema"


def test_an_unreachable_server_is_a_clear_error(cli, tmp_path: Path, api_server):
    kubeconfig = api_server.unreachable_kubeconfig(tmp_path / "kubeconfig")
    result = cli(
        "validate",
        "--repo",
        str(write_fixture(tmp_path / "repo", [good_deployment()])),
        "--server",
        "--kubeconfig",
        str(kubeconfig),
    )
    assert result.exit_code == 2
    assert "https://127.0.0.1:9: cannot reach the API server" in result.stderr

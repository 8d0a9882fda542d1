"""What staging and production put on the internet: the MLflow and Grafana UIs behind Ingresses
with TLS and authentication, at the hosts the Argo CD links name, and a tracking server that
answers the host its Ingress forwards (run for real: its host check refuses names it does not
know)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from mlopsctl.base import kustomize, toolchain
from mlopsctl.base.resources import Resource, parse_render
from tests.support.chart_values import chart_values
from tests.support.mlflow_fixtures import start_server, stop_server
from tests.support.paths import REPOSITORY, TOOLS_DIR

PUBLIC_ENVIRONMENTS = ("staging", "production")
LINK = "link.argocd.argoproj.io/"


def render(root: str) -> list[Resource]:
    result = kustomize.render_root(REPOSITORY, root, toolchain.resolve(TOOLS_DIR), False)
    assert result.error is None, result.error
    return parse_render(root, result.output)


def links(environment: str) -> dict[str, str]:
    defaults = yaml.safe_load(
        (REPOSITORY / f"apps/{environment}/application-defaults.yaml").read_text()
    )
    return {
        key.removeprefix(LINK): value
        for key, value in defaults["metadata"]["annotations"].items()
        if key.startswith(LINK)
    }


def ingress(resources: list[Resource], name: str) -> dict[str, Any]:
    (found,) = [r.body for r in resources if r.kind == "Ingress" and r.name == name]
    return found


@pytest.mark.parametrize("environment", PUBLIC_ENVIRONMENTS)
def test_the_mlflow_link_is_an_ingress_with_tls_and_authentication(environment):
    url = urlsplit(links(environment)["mlflow-ui"])
    assert url.scheme == "https"
    resources = render(f"overlays/{environment}/mlflow-tracking")
    body = ingress(resources, "mlflow-tracking")
    annotations = body["metadata"]["annotations"]
    assert [rule["host"] for rule in body["spec"]["rules"]] == [url.hostname]
    assert body["spec"]["tls"][0]["hosts"] == [url.hostname]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert annotations["nginx.ingress.kubernetes.io/auth-type"] == "basic"
    secret = annotations["nginx.ingress.kubernetes.io/auth-secret"]
    (made,) = [r.body for r in resources if r.kind == "ExternalSecret" and r.name == secret]
    assert [item["secretKey"] for item in made["spec"]["data"]] == ["auth"]
    # The way in from ingress-nginx, past the namespace's default deny.
    policies = [r.body for r in resources if r.kind == "NetworkPolicy"]
    assert any(
        peer.get("namespaceSelector", {}).get("matchLabels")
        == {"kubernetes.io/metadata.name": "ingress-nginx"}
        for policy in policies
        for rule in policy["spec"].get("ingress", [])
        for peer in rule.get("from", [])
    )


@pytest.mark.parametrize("environment", PUBLIC_ENVIRONMENTS)
def test_the_grafana_link_is_the_chart_ingress_with_tls_and_no_anonymous_access(environment):
    url = urlsplit(links(environment)["grafana"])
    assert url.scheme == "https"
    grafana = chart_values(environment, "kube-prometheus-stack")["grafana"]
    assert grafana["ingress"]["enabled"] is True
    assert grafana["ingress"]["hosts"] == [url.hostname]
    assert grafana["ingress"]["tls"][0]["hosts"] == [url.hostname]
    assert grafana["ingress"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert grafana["grafana.ini"]["auth.anonymous"]["enabled"] is False
    assert grafana["admin"]["existingSecret"] == "grafana-admin"


def test_local_links_are_the_port_forwards():
    assert {urlsplit(url).hostname for url in links("local").values()} == {"localhost"}


def status_for_host(url: str, host: str) -> int:
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
@pytest.mark.parametrize("environment", PUBLIC_ENVIRONMENTS)
def test_the_tracking_server_answers_its_public_host_and_no_other(environment, tmp_path: Path):
    """The rendered --allowed-hosts, given to a real `mlflow server`."""
    (deployment,) = [
        r.body for r in render(f"overlays/{environment}/mlflow-tracking") if r.kind == "Deployment"
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    allowed = next(e["value"] for e in container["env"] if e["name"] == "MLFLOW_ALLOWED_HOSTS")
    public = urlsplit(links(environment)["mlflow-ui"]).hostname
    server = start_server(
        tmp_path, f"sqlite:///{tmp_path}/mlflow.db", None, ["--allowed-hosts", allowed]
    )
    try:
        assert status_for_host(server.url, str(public)) == 200
        assert status_for_host(server.url, f"{public}.attacker.example") == 403
        assert status_for_host(server.url, "mlflow.example.org") == 403
    finally:
        stop_server(server)

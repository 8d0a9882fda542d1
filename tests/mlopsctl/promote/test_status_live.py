"""`mlopsctl status --live`, from a real MLflow through Git to a real kube-apiserver.

Argo CD's controller and the kubelet cannot run here: the test writes the Application's status
(sync, health, the last operation) and the Deployment's status (replicas ready and updated) as
those two would, through the status subresource, and everything else is real: the registry, the
repository and its commits, the API server with the project's CRDs, the Deployment and the pinned
ConfigMap it reads.
"""

from __future__ import annotations

import datetime
import http.server
import json
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlopsctl.base import kustomize, toolchain
from mlopsctl.base.errors import KubeApiError
from mlopsctl.base.kubeapi import in_cluster_kubeconfig
from mlopsctl.base.resources import parse_render
from tests.support.cluster_writes import ENVIRONMENT, apply, deploy
from tests.support.kube_apiserver import TestApiServer
from tests.support.paths import REPOSITORY, TOOLS_DIR


def git(directory: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=directory, check=True, capture_output=True, text=True
    ).stdout.strip()


def promote(cli, platform, mlflow_server) -> str:
    """Promotes what @challenger names to local and fetches it: the promotion's commit."""
    before = git(platform.remote, "rev-parse", "main")
    result = platform.command(cli, "promote", mlflow_server.url, "--env", ENVIRONMENT)
    assert result.exit_code == 0, result.stderr
    git(
        platform.checkout, "fetch", "--quiet", str(platform.remote), "main:refs/remotes/origin/main"
    )
    after = git(platform.remote, "rev-parse", "main")
    assert after != before
    return after


@pytest.fixture
def promoted(cli, platform, mlflow_server) -> tuple[Any, str, str]:
    """Version 1 moved to @challenger and promoted to local: (platform, commit before, after)."""
    mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    before = git(platform.remote, "rev-parse", "main")
    return platform, before, promote(cli, platform, mlflow_server)


def live_status(cli, platform, mlflow_url: str, kubeconfig: Path, *extra: str) -> Any:
    return cli(
        "status",
        "--repo",
        str(platform.checkout),
        "--mlflow-uri",
        mlflow_url,
        "--env",
        ENVIRONMENT,
        "--live",
        "--kubeconfig",
        str(kubeconfig),
        *extra,
    )


def live(cli, platform, mlflow_url: str, api_server: TestApiServer) -> tuple[int, dict[str, Any]]:
    result = live_status(cli, platform, mlflow_url, api_server.kubeconfig, "--format", "json")
    assert result.stdout, result.stderr
    [row] = [row for row in result.json()["rows"] if row["alias"] == "challenger"]
    return result.exit_code, row


def test_in_step_end_to_end(cli, promoted, mlflow_server, api_server, kube):
    platform, _before, after = promoted
    deploy(kube, "1", platform.model, after)
    exit_code, row = live(cli, platform, mlflow_server.url, api_server)
    assert (row["mlflow"], row["git"], row["served"], row["ready"]) == ("1", "1", "1", "1/1")
    assert (row["sync"], row["health"], row["operation"]) == ("Synced", "Healthy", "Succeeded")
    assert row["contains_promotion"] is True
    assert (row["state"], exit_code) == ("in step", 0)


@pytest.mark.parametrize(
    ("setting", "state", "detail"),
    [
        ({"revision": "before"}, "git ahead of cluster", "does not contain the pin's last commit"),
        ({"sync": "OutOfSync"}, "out of sync", "Argo CD says OutOfSync"),
        ({"phase": "Failed"}, "sync failed", "one or more objects failed"),
        ({"health": "Degraded"}, "degraded", "Degraded since 2026-12-02T06:00:00Z"),
        ({"version": "0"}, "pods on old version", "the pods serve 0, Git pins 1"),
        ({"ready": 0}, "rolling out", "1/1 updated, 0 ready"),
        ({"old_pods": 1}, "rolling out", "1/1 updated, 2 ready, 1 from an older template"),
    ],
)
def test_each_way_of_being_out_of_step(
    cli, promoted, mlflow_server, api_server, kube, setting, state, detail
):
    platform, before, after = promoted
    arguments: dict[str, Any] = {"version": "1", "revision": after, **setting}
    if arguments["revision"] == "before":
        arguments["revision"] = before
    deploy(kube, model=platform.model, **arguments)
    exit_code, row = live(cli, platform, mlflow_server.url, api_server)
    assert (row["state"], exit_code) == (state, 1)
    assert detail in row["detail"]


def test_an_unreachable_cluster_is_a_row_not_a_crash(
    cli, promoted, mlflow_server, api_server, tmp_path
):
    platform, _before, _after = promoted
    kubeconfig = api_server.unreachable_kubeconfig(tmp_path / "kubeconfig")
    result = live_status(cli, platform, mlflow_server.url, kubeconfig)
    assert result.exit_code == 1
    assert "cluster unreachable: https://127.0.0.1:9: cannot reach the API server" in result.stdout


def deployment_tags(mlflow_server, model: str, version: str) -> dict[str, str]:
    tags = mlflow_server.client().get_model_version(model, version).tags
    return {key: value for key, value in tags.items() if key.startswith("deployed.")}


def test_deployment_tags_follow_the_version_that_runs(
    cli, promoted, mlflow_server, api_server, kube
):
    platform, _before, first = promoted
    record = ("--format", "json", "--record-deployments")
    deploy(kube, "1", platform.model, first)
    result = live_status(cli, platform, mlflow_server.url, api_server.kubeconfig, *record)
    assert result.exit_code == 0, result.stdout
    tags = deployment_tags(mlflow_server, platform.model, "1")
    assert tags["deployed.local"] == first
    since = datetime.datetime.fromisoformat(tags["deployed.local.since"])
    assert abs(datetime.datetime.now(datetime.UTC) - since) < datetime.timedelta(minutes=5)

    again = live_status(cli, platform, mlflow_server.url, api_server.kubeconfig, *record)
    assert again.json()["deployment_tags"] == []

    # Version 2 promoted and synced, but the pods still serve version 1: nothing moves yet.
    mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    second = promote(cli, platform, mlflow_server)
    deploy(kube, "1", platform.model, second)
    waiting = live_status(cli, platform, mlflow_server.url, api_server.kubeconfig, *record)
    assert waiting.exit_code == 1
    assert waiting.json()["deployment_tags"] == []
    assert deployment_tags(mlflow_server, platform.model, "1")["deployed.local"] == first

    deploy(kube, "2", platform.model, second)
    done = live_status(cli, platform, mlflow_server.url, api_server.kubeconfig, *record)
    assert done.exit_code == 0, done.stdout
    assert deployment_tags(mlflow_server, platform.model, "2")["deployed.local"] == second
    assert deployment_tags(mlflow_server, platform.model, "1") == {}


def service_account_directory(kube, api_server, directory: Path, name: str) -> Path:
    """What the kubelet mounts for a pod of service account `name` (ml-platform): a token the
    API server issued for it (TokenRequest) and the cluster's CA."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    status, answer = kube.request(
        "POST",
        f"/api/v1/namespaces/ml-platform/serviceaccounts/{name}/token",
        json.dumps(body).encode(),
        "application/json",
    )
    assert status == 201, answer
    directory.mkdir()
    (directory / "token").write_text(answer["status"]["token"])
    shutil.copy(api_server.kubeconfig.parent / "ca.crt", directory / "ca.crt")
    return directory


def test_the_promoter_reads_its_cluster_with_its_own_service_account(
    cli, promoted, mlflow_server, api_server, kube, tmp_path
):
    """The Roles the staging overlay and Argo CD's settings ship are what `status --live`
    needs, and no more is needed: read with the promoter's own token, in-cluster style."""
    platform, _before, after = promoted
    deploy(kube, "1", platform.model, after)
    rendered = kustomize.render_root(
        REPOSITORY, "overlays/staging/promoter", toolchain.resolve(TOOLS_DIR), False
    )
    argocd_roles = yaml.safe_load_all(
        (REPOSITORY / "base/argocd-settings/promoter-reads-applications.yaml").read_text()
    )
    wanted = ("ServiceAccount", "Role", "RoleBinding")
    for resource in parse_render("overlays/staging/promoter", rendered.output):
        if resource.kind in wanted:
            apply(kube, resource.body)
    for body in argocd_roles:
        body["metadata"]["namespace"] = "argocd"
        apply(kube, body)
    server = urllib.parse.urlparse(api_server.url)
    kubeconfig = in_cluster_kubeconfig(
        tmp_path / "kubeconfig",
        {
            "KUBERNETES_SERVICE_HOST": str(server.hostname),
            "KUBERNETES_SERVICE_PORT": str(server.port),
        },
        service_account_directory(kube, api_server, tmp_path / "serviceaccount", "promoter"),
    )
    result = live_status(cli, platform, mlflow_server.url, kubeconfig, "--format", "json")
    [row] = [row for row in result.json()["rows"] if row["alias"] == "challenger"]
    assert (row["state"], result.exit_code) == ("in step", 0), row

    # Without the Role in Argo CD's namespace the cluster refuses, and the row says so.
    status, answer = kube.request(
        "DELETE",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/argocd/rolebindings/"
        "promoter-reads-applications",
    )
    assert status == 200, answer
    refused = live_status(cli, platform, mlflow_server.url, kubeconfig, "--format", "json")
    [row] = [row for row in refused.json()["rows"] if row["alias"] == "challenger"]
    assert (row["state"], refused.exit_code) == ("cluster refused", 1)
    assert "listing the Applications: HTTP 403" in row["detail"]


def test_in_cluster_needs_a_mounted_token(tmp_path):
    with pytest.raises(KubeApiError, match="KUBERNETES_SERVICE_HOST is not set"):
        in_cluster_kubeconfig(tmp_path / "kubeconfig", {}, tmp_path)
    with pytest.raises(KubeApiError, match=r"token is missing .*automountServiceAccountToken"):
        in_cluster_kubeconfig(
            tmp_path / "kubeconfig", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, tmp_path
        )


def test_a_context_naming_a_missing_cluster_is_a_row_not_a_crash(
    cli, promoted, mlflow_server, api_server, tmp_path
):
    platform, _before, _after = promoted
    document = yaml.safe_load(api_server.kubeconfig.read_text())
    for context in document["contexts"]:
        context["context"]["cluster"] = "nowhere"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(document))
    result = live_status(cli, platform, mlflow_server.url, kubeconfig)
    assert result.exit_code == 1
    assert "names a cluster or user the file does not define ('nowhere')" in result.stdout


class LoginPage(http.server.BaseHTTPRequestHandler):
    """What a proxy or a login page in front of the API server answers: 200 and HTML."""

    def do_GET(self) -> None:
        body = b"<html>please log in</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_arguments: Any) -> None:
        pass


def test_an_answer_that_is_not_the_kubernetes_api_is_a_row_not_a_crash(
    cli, promoted, mlflow_server, tmp_path
):
    platform, _before, _after = promoted
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LoginPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        url = f"http://127.0.0.1:{server.server_address[1]}"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "clusters": [{"name": "proxy", "cluster": {"server": url}}],
                    "users": [{"name": "someone", "user": {"token": "t"}}],
                    "contexts": [
                        {"name": "proxy", "context": {"cluster": "proxy", "user": "someone"}}
                    ],
                    "current-context": "proxy",
                }
            )
        )
        result = live_status(cli, platform, mlflow_server.url, kubeconfig)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1
    assert "cluster unreachable" in result.stdout
    assert "HTTP 200 but not a Kubernetes API answer" in result.stdout

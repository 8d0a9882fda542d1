"""mlopsctl.bootstrap.report: what bootstrap says after it has applied. One line per
Application whose state changed, the message when the rollout does not finish, Helm's merge of
value files, and how to reach each UI: the Ingress hosts the environment's renders answer on,
and for links to localhost the port-forward that makes them work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlopsctl.base import toolchain
from mlopsctl.base.config import load_config
from mlopsctl.base.resources import Resource
from mlopsctl.bootstrap.report import (
    ApplicationRender,
    access_lines,
    merged_values,
    progress_lines,
    progress_of,
    timeout_message,
)
from mlopsctl.commands._workspace import Workspace
from mlopsctl.commands.bootstrap import application_renders
from tests.support.paths import TOOLS_DIR


def test_progress_prints_only_what_changed() -> None:
    def application(name: str, sync: str, health: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "status": {"sync": {"status": sync}, "health": {"status": health}},
        }

    before = progress_of(
        [application("a", "Synced", "Healthy"), application("bb", "OutOfSync", "Missing")]
    )
    after = progress_of(
        [application("a", "Synced", "Healthy"), application("c", "Synced", "Healthy")]
    )
    assert progress_lines({}, before) == ["a   Synced, Healthy", "bb  OutOfSync, Missing"]
    assert progress_lines(before, after) == ["c   Synced, Healthy", "bb  deleted"]
    assert progress_lines(after, after) == []


def test_helm_values_merge_as_helm_merges_them() -> None:
    assert merged_values(
        [
            {"grafana": {"ingress": {"enabled": True, "hosts": ["a"]}, "keep": 1}, "gone": 1},
            None,
            {"grafana": {"ingress": {"hosts": ["b"]}}, "gone": None},
        ]
    ) == {"grafana": {"ingress": {"enabled": True, "hosts": ["b"]}, "keep": 1}}


def test_the_ui_hosts_are_those_the_overlays_define(platform_copy: Path) -> None:
    """Staging's Ingress hosts, read from the overlays (moved in the copy, to show they are not
    written into the code), and local's port-forwards to the Services the links point at."""
    public_host = platform_copy / "overlays" / "staging" / "mlflow-tracking" / "public-host.yaml"
    public_host.write_text(public_host.read_text().replace("mlflow.staging.example.com", "ml.test"))
    values = platform_copy / "overlays" / "staging" / "kube-prometheus-stack" / "values.yaml"
    values.write_text(values.read_text().replace("grafana.staging.example.com", "grafana.test"))
    space = Workspace(platform_copy, load_config(platform_copy), TOOLS_DIR)
    tools = toolchain.resolve(TOOLS_DIR)

    staging = access_lines("staging", [], application_renders(space, "staging", tools))
    local = access_lines("local", [], application_renders(space, "local", tools))

    assert "mlflow-tracking (mlflow-tracking-staging): https://ml.test" in staging
    assert "grafana (kube-prometheus-stack-staging): https://grafana.test" in staging
    assert not any("example.com" in line and "mlflow" in line for line in staging)
    assert not any("port-forward" in line for line in staging[1:])
    assert (
        "grafana: http://localhost:3000 after kubectl port-forward -n monitoring "
        "svc/kube-prometheus-stack-grafana 3000:80"
    ) in local
    assert (
        "grafana login: Secret monitoring/grafana-admin (keys admin-user, admin-password)" in local
    )


def test_a_rollout_in_which_no_application_appeared_says_so() -> None:
    assert timeout_message({}, 4.0) == "no Argo CD Application appeared in 4 s"


def resource(body: dict[str, Any]) -> Resource:
    return Resource("apps/qa", body)


def an_application(name: str, annotations: dict[str, str]) -> Resource:
    return resource(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name, "namespace": "argocd", "annotations": annotations},
            "spec": {"destination": {"namespace": "shop"}},
        }
    )


def test_hosts_with_tls_are_https_and_a_link_nothing_serves_says_so() -> None:
    ingress = resource(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "rules": [{"host": "shop.test"}, {"host": "admin.shop.test"}],
                "tls": [{"hosts": ["shop.test"], "secretName": "shop-tls"}],
            },
        }
    )
    web = ApplicationRender(
        an_application("web-qa", {"link.argocd.argoproj.io/traces": "http://localhost:16686"}),
        (ingress,),
    )

    lines = access_lines("qa", [], [web])

    assert lines == [
        "Argo CD: the install renders no argocd-server Service; see Argo CD's documentation",
        "web (web-qa): https://shop.test",
        "web (web-qa): http://admin.shop.test",
        "traces: http://localhost:16686 (no Service found here to forward to)",
    ]


def test_without_an_ingress_the_uis_are_reached_through_port_forwards() -> None:
    service = resource(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "port": 8501}]},
        }
    )
    link = {"link.argocd.argoproj.io/shop": "http://127.0.0.1:8501/cart"}
    renders = [
        ApplicationRender(an_application("web-qa", link), (service,)),
        # The same link on a second Application is listed once.
        ApplicationRender(an_application("worker-qa", link)),
    ]

    lines = access_lines("qa", [], renders)

    assert lines[1:] == [
        "shop: http://127.0.0.1:8501/cart after kubectl port-forward -n shop svc/web 8501:8501",
        "No Ingress in qa: the UIs are reached through port-forwards. Without a cluster, "
        "`mlopsctl up --env qa` runs the environment on this machine and opens its own.",
    ]

"""The operators' stand-ins, on a node of the test's own (tests/support/local_node.py):
CloudNativePG makes of the repository's `Cluster` what the operator makes (a PostgreSQL the
`-app` Secret's URI logs in to, its Services, claim and labels), the Prometheus Operator's
stand-in writes Prometheus' files and keeps a rule promtool refuses from reaching Prometheus,
kube-state-metrics' stand-in serves the series the rules read, and chart values merge as Helm
merges them."""

from __future__ import annotations

import copy
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlopsctl.base import toolchain
from mlopsctl.base.errors import UnsupportedManifest
from mlopsctl.base.kustomize import render_root
from mlopsctl.base.resources import parse_render
from mlopsctl.localrun import operators, workloads
from mlopsctl.localrun.cluster import Cluster
from mlopsctl.localrun.model import KeyReference
from tests.support.local_node import HostImages, deployment, node, server, wait_for
from tests.support.paths import REPOSITORY

pytestmark = pytest.mark.usefixtures("as_root")

APP_KEYS = {
    "username",
    "user",
    "password",
    "dbname",
    "host",
    "port",
    "pgpass",
    "uri",
    "jdbc-uri",
    "fqdn-uri",
    "fqdn-jdbc-uri",
}


def rendered(component: str) -> list[dict[str, Any]]:
    tools = toolchain.resolve(toolchain.default_tools_dir(REPOSITORY))
    result = render_root(REPOSITORY, f"overlays/local/{component}", tools, False)
    assert result.error is None, result.error
    bodies = [resource.body for resource in parse_render(component, result.output)]
    for body in bodies:
        body.setdefault("metadata", {}).setdefault("namespace", "ml-platform")
    return bodies


def one(bodies: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [
        body for body in bodies if body["kind"] == kind and name in (None, body["metadata"]["name"])
    ]
    return copy.deepcopy(found)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with node(tmp_path) as made:
        yield made


@pytest.fixture
def cnpg(cluster: Cluster) -> operators.CloudNativePG:
    """The stand-in installed as the sync installs it for the cloudnative-pg chart."""
    operator = operators.CloudNativePG()
    cluster.operators["Cluster"] = operator
    assert isinstance(cluster.images, HostImages)
    cluster.images.images["cnpg-stand-in/postgres"] = operator.image
    return operator


def test_the_database_cluster_becomes_a_postgresql_its_app_secret_logs_in_to(
    cluster: Cluster, cnpg: operators.CloudNativePG
):
    postgres = one(rendered("postgres"), "Cluster")
    cluster.apply(postgres, "postgres-local")
    cluster.start()
    wait_for(
        lambda: (
            cluster.health("Cluster", "ml-platform", "postgres")
            == ("Healthy", "Cluster in healthy state")
        ),
        "PostgreSQL to be ready",
        90,
    )
    secret = cluster.config_data("Secret", "ml-platform", "postgres-app")
    assert secret is not None and set(secret) == APP_KEYS
    # What the tracking server reads of it, it finds.
    tracking = workloads.workload(one(rendered("mlflow-tracking"), "Deployment"))
    read = {
        variable.reference.key
        for container in tracking.template.containers
        for variable in container.env
        if isinstance(variable.reference, KeyReference)
        and (variable.reference.kind, variable.reference.name) == ("Secret", "postgres-app")
    }
    assert read and read <= set(secret)
    # The URI logs in to the database the manifest names, as the owner it names, through the
    # read-write Service (here by its address; in a pod by the name in the URI).
    uri = urllib.parse.urlsplit(secret["uri"])
    initdb = postgres["spec"]["bootstrap"]["initdb"]
    assert (uri.username, uri.path) == (initdb["owner"], f"/{initdb['database']}")
    assert uri.hostname == "postgres-rw.ml-platform" and uri.port == 5432
    _, address = cluster.services[("ml-platform", "postgres-rw")]
    login = uri._replace(netloc=uri.netloc.replace(uri.hostname, address)).geturl()
    answer = subprocess.run(
        ["psql", login, "-Atc", "select current_user, current_database()"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert answer.stdout.strip() == f"{initdb['owner']}|{initdb['database']}", answer.stderr
    # A wrong password is refused: the database checks it.
    wrong = login.replace(urllib.parse.quote(secret["password"], safe=""), "wrong")
    refused = subprocess.run(
        ["psql", wrong, "-Atc", "select 1"], capture_output=True, text=True, timeout=30, check=False
    )
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr
    # Deleted, the instance stops at once, as the operator's does: PostgreSQL and its metrics
    # exporter both end on SIGTERM, well inside the 30 s grace period.
    instance = cluster.pods["postgres-1"]
    started = time.monotonic()
    instance.stop()
    assert time.monotonic() - started < 10
    assert {name: state.exit_code for name, state in instance.containers.items()} == {
        "postgres": 0,
        "metrics-exporter": 0,
    }


def test_the_operators_objects_carry_what_their_readers_select(
    cluster: Cluster, cnpg: operators.CloudNativePG
):
    bodies = rendered("postgres")
    postgres = one(bodies, "Cluster")
    cluster.apply(postgres, "postgres-local")
    password = cluster.config_data("Secret", "ml-platform", "postgres-app")["password"]  # type: ignore[index]
    # Applied again (every sync does): the password stays, or the database would refuse it.
    cluster.apply(postgres, "postgres-local")
    assert cluster.config_data("Secret", "ml-platform", "postgres-app")["password"] == password  # type: ignore[index]
    instance = cluster.deployments[("ml-platform", "postgres")]
    labels = instance.workload.template.label_map
    assert instance.fixed_names == ("postgres-1",)
    # The rendered PodMonitor and NetworkPolicies select the instance by these labels.
    monitor = one(bodies, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    selectors = [
        selector
        for policy in bodies
        if policy["kind"] == "NetworkPolicy"
        for selector in pod_selectors(policy)
        if "cnpg.io/cluster" in selector
    ]
    assert len(selectors) >= 2
    assert all(selector.items() <= labels.items() for selector in selectors)
    # The read-write Service selects the primary; its claim exists for the pod to mount.
    rw, _ = cluster.services[("ml-platform", "postgres-rw")]
    assert dict(rw.selector).items() <= labels.items()
    assert ("PersistentVolumeClaim", "ml-platform", "postgres-1") in cluster.objects


def pod_selectors(node: Any) -> list[dict[str, str]]:
    """Every podSelector's matchLabels in a manifest, wherever it is."""
    if isinstance(node, list):
        return [found for item in node for found in pod_selectors(item)]
    if not isinstance(node, dict):
        return []
    found = [node["podSelector"].get("matchLabels") or {}] if "podSelector" in node else []
    return found + [selector for value in node.values() for selector in pod_selectors(value)]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"instances": 3}, "spec.instances"),
        ({"backup": {"barmanObjectStore": {}}}, "spec.backup"),
    ],
)
def test_what_the_postgresql_stand_in_cannot_run_is_refused_by_name(
    cluster: Cluster, cnpg: operators.CloudNativePG, change: dict[str, Any], field: str
):
    postgres = one(rendered("postgres"), "Cluster")
    postgres["spec"].update(change)
    with pytest.raises(UnsupportedManifest) as refused:
        cluster.apply(postgres, "postgres-local")
    assert refused.value.field == field
    assert cluster.config_data("Secret", "ml-platform", "postgres-app") is None


# -- the Prometheus Operator's stand-in ----------------------------------------------------------


@pytest.fixture
def stack(cluster: Cluster) -> operators.PrometheusStack:
    made = operators.PrometheusStack({}, None, "30s", kube_state_metrics_port=8080)
    for kind in made.kinds:
        cluster.operators[kind] = made
    return made


def test_prometheus_gets_the_monitors_jobs_and_the_rules_promtool_accepts(
    cluster: Cluster, stack: operators.PrometheusStack
):
    bodies = rendered("mlflow-tracking")
    for body in bodies:
        if body["kind"] in stack.kinds:
            cluster.apply(body, "mlflow-tracking-local")
    stack.install(cluster)
    assert stack.config_directory is not None
    config = yaml.safe_load((stack.config_directory / "prometheus.yaml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == [
        "serviceMonitor/ml-platform/mlflow-tracking/0",
        "kube-state-metrics",
    ]
    assert config["scrape_configs"][1]["static_configs"][0]["targets"] == [
        f"{cluster.network.node_address}:8080"
    ]
    [rule_file] = config["rule_files"]
    written = stack.config_directory / Path(rule_file).name
    assert yaml.safe_load(written.read_text()) == {
        "groups": one(bodies, "PrometheusRule")["spec"]["groups"]
    }
    # A rule promtool refuses never reaches Prometheus: the files stay as they were, and the
    # run says why, naming the PrometheusRule.
    broken = one(bodies, "PrometheusRule")
    broken["spec"]["groups"][0]["rules"][0]["expr"] = "sum(up"
    cluster.apply(broken, "mlflow-tracking-local")
    before = written.read_text()
    lines: list[str] = []
    cluster.log = lines.append
    stack.reconcile(cluster)
    assert written.read_text() == before
    [said] = [line for line in lines if line.startswith("prometheus: ")]
    assert "(from PrometheusRule/ml-platform/mlflow-tracking)" in said
    assert "unclosed left parenthesis" in said
    assert sorted(path.name for path in stack.config_directory.parent.iterdir()) == [
        stack.config_directory.name
    ]
    # A monitor field the stand-in cannot honour is refused before it is accepted.
    monitor = one(bodies, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["relabelings"] = [{"action": "drop"}]
    with pytest.raises(UnsupportedManifest, match=r"spec\.endpoints\[0\]\.relabelings"):
        cluster.apply(monitor, "mlflow-tracking-local")


def test_kube_state_metrics_serves_the_deployments_and_containers_as_they_are(
    cluster: Cluster, tmp_path: Path
):
    cluster.start()
    cluster.apply(deployment("web", [server()]), "test")
    wait_for(lambda: cluster.health("Deployment", "apps", "web")[0] == "Healthy", "web")
    stand_in = operators.KubeStateMetrics(cluster, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stand_in.port}/metrics") as answer:
            text = answer.read().decode()
    finally:
        stand_in.stop()
    [pod] = [pod for pod in cluster.pods.values() if pod.owner.name == "web"]
    series = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    deployment_labels = (("deployment", "web"), ("namespace", "apps"))
    container_labels = (("container", "app"), ("namespace", "apps"), ("pod", pod.name))
    assert series == {
        ("kube_deployment_spec_replicas", deployment_labels): 1,
        ("kube_deployment_status_replicas_available", deployment_labels): 1,
        ("kube_pod_container_status_restarts_total", container_labels): 0,
        ("kube_pod_container_status_ready", container_labels): 1,
    }


def test_chart_values_merge_as_helm_merges_them(tmp_path: Path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "values.yaml").write_text(
        "prometheus:\n  prometheusSpec:\n    retention: 10d\n    resources: {limits: {cpu: 1}}\n"
        "grafana: {enabled: true}\nlist: [a, b]\n"
    )
    (tmp_path / "local.yaml").write_text(
        "prometheus:\n  prometheusSpec:\n    retention: 2d\nlist: [c]\n"
    )
    values = operators.chart_values(
        tmp_path, ["$values/base/values.yaml", "$values/missing.yaml", "$values/local.yaml"]
    )
    # Maps merge key by key, the later file winning; lists are replaced; a file that does not
    # exist adds nothing.
    assert values == {
        "prometheus": {"prometheusSpec": {"retention": "2d", "resources": {"limits": {"cpu": 1}}}},
        "grafana": {"enabled": True},
        "list": ["c"],
    }

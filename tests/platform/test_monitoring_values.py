"""The charts' values as each environment's Application hands them to Helm: every chart workload
sized, GKE's hidden control plane not scraped, Prometheus on a volume sized for its retention, and
alerts routed to people on staging and production (checked by Alertmanager's own `amtool`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.chart_values import CHART_JOBS, CHART_WORKLOADS, at, chart_values
from tests.support.paths import REPOSITORY

ENVIRONMENTS = ("local", "staging", "production")
GKE_ENVIRONMENTS = ("staging", "production")


def bytes_of(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B?)", quantity).groups()  # type: ignore[union-attr]
    powers = {"K": 1, "M": 2, "G": 3, "T": 4}
    base = 1024 if "i" in unit else 1000
    return float(number) * base ** powers[unit[0]]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_chart_workload_asks_for_and_is_capped_in_cpu_and_memory(environment):
    places = {(w.chart, path) for w in CHART_WORKLOADS for path, _count in w.containers}
    missing = [
        f"{chart}: {path or '(top level)'}.resources.{section}.{resource}"
        for chart, path in sorted(places | set(CHART_JOBS))
        for section in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource
        not in (at(chart_values(environment, chart), f"{path}.resources.{section}") or {})
    ]
    assert missing == []


@pytest.mark.parametrize("environment", GKE_ENVIRONMENTS)
def test_gke_does_not_scrape_or_alert_on_the_control_plane_it_hides(environment):
    values = chart_values(environment, "kube-prometheus-stack")
    for component in ("kubeControllerManager", "kubeScheduler", "kubeProxy", "kubeEtcd"):
        assert values[component]["enabled"] is False, component
    rules = values["defaultRules"]["rules"]
    for group in (
        "etcd",
        "kubeControllerManager",
        "kubeSchedulerAlerting",
        "kubeSchedulerRecording",
        "kubeProxy",
    ):
        assert rules[group] is False, group
    # The cluster dashboards' sources stay: nodes, kubelet/cAdvisor, object state.
    for component in ("nodeExporter", "kubelet", "kubeStateMetrics", "kubeApiServer"):
        assert at(values, f"{component}.enabled") is not False, component


@pytest.mark.parametrize("environment", GKE_ENVIRONMENTS)
def test_prometheus_keeps_its_retention_on_a_volume_it_cannot_fill(environment):
    spec = chart_values(environment, "kube-prometheus-stack")["prometheus"]["prometheusSpec"]
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    size = bytes_of(claim["resources"]["requests"]["storage"])
    limit = bytes_of(spec["retentionSize"])
    # The TSDB's WAL and the compaction in flight sit on top of retentionSize.
    assert limit <= 0.85 * size
    assert claim["accessModes"] == ["ReadWriteOnce"]
    days = int(spec["retention"].removesuffix("d"))
    # About 0.5 GB a day for this platform's cluster (README, "Monitoring storage").
    assert limit >= days * 0.5e9
    assert (
        chart_values("production", "kube-prometheus-stack")["prometheus"]["prometheusSpec"][
            "retention"
        ]
        == "30d"
    )


def test_local_keeps_prometheus_on_the_chart_default():
    spec = chart_values("local", "kube-prometheus-stack")["prometheus"]["prometheusSpec"]
    assert "storageSpec" not in spec


def alertmanager_config(environment: str, tmp_path: Path) -> Path:
    config = chart_values(environment, "kube-prometheus-stack")["alertmanager"]["config"]
    path = tmp_path / f"alertmanager-{environment}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def amtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["amtool", *arguments], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("environment", GKE_ENVIRONMENTS)
def test_alerts_reach_people_by_severity(environment, tmp_path):
    path = alertmanager_config(environment, tmp_path)
    checked = amtool("check-config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def receivers(*labels: str) -> str:
        result = amtool("config", "routes", "test", f"--config.file={path}", *labels)
        return result.stdout.strip()

    assert receivers("alertname=ModelServerDown", "severity=critical") == "pagerduty,slack"
    assert receivers("alertname=ModelServerSlow", "severity=warning") == "slack"
    assert receivers("alertname=Watchdog", "severity=none") == "null"
    assert receivers("alertname=KubeMemoryOvercommit", "severity=info") == "null"
    # The receivers' keys are files from the ExternalSecret, never values in the configuration.
    mounted = chart_values(environment, "kube-prometheus-stack")["alertmanager"][
        "alertmanagerSpec"
    ]["secrets"]
    text = path.read_text()
    for key in re.findall(r"_file: (\S+)", text):
        assert key.startswith(f"/etc/alertmanager/secrets/{mounted[0]}/")
    externalsecret = yaml.safe_load(
        (
            REPOSITORY
            / "base/platform/gcp-secret-manager/externalsecret-alertmanager-receivers.yaml"
        ).read_text()
    )
    assert externalsecret["spec"]["target"]["name"] == mounted[0]
    files = {key.rsplit("/", 1)[1] for key in re.findall(r"_file: (\S+)", text)}
    assert files == {item["secretKey"] for item in externalsecret["spec"]["data"]}


def test_amtool_refuses_a_route_to_a_receiver_that_does_not_exist(tmp_path):
    path = alertmanager_config("production", tmp_path)
    path.write_text(path.read_text().replace("receiver: pagerduty", "receiver: pager-duty"))
    checked = amtool("check-config", str(path))
    assert checked.returncode != 0
    assert 'undefined receiver "pager-duty"' in checked.stdout + checked.stderr


def test_local_alerts_go_nowhere_on_purpose():
    """Local keeps the chart's own configuration: one "null" receiver, said so in the values."""
    values = chart_values("local", "kube-prometheus-stack")
    assert "config" not in values["alertmanager"]
    text = (REPOSITORY / "base/kube-prometheus-stack/values.yaml").read_text()
    assert 'every alert goes to the chart\'s "null" receiver, which notifies nobody' in text

"""The operator's part for the local run: rendered ServiceMonitors, PodMonitors and
PrometheusRules -> Prometheus' scrape jobs, rule files and configuration file, with the
operator's semantics, refusing by name what it cannot honour; and a configuration that
Prometheus' own `promtool check config` accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.localrun import operators, prometheus_config
from mlopsctl.localrun.model import ContainerPort, PodAddress
from tests.support.monitoring import (
    PROMTOOL,
    Rendered,
    addresses,
    pod,
    render,
    service,
    service_monitor,
    services_of,
    targets_of,
    write_rule_files,
)


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return render()


# -- ServiceMonitors on the real manifests ------------------------------------------------------


def test_the_tracking_servers_monitor_scrapes_its_pods_as_the_rule_expects(rendered: Rendered):
    ready = rendered.pod("mlflow-tracking", "mlflow-tracking-7d9f-a", "10.42.0.5")
    starting = rendered.pod("mlflow-tracking", "mlflow-tracking-7d9f-b", "10.42.0.6", ready=False)
    no_address_yet = rendered.pod("mlflow-tracking", "mlflow-tracking-7d9f-c", "")
    model_server = rendered.pod("model-server", "model-server-5c4b-a", "10.42.0.7")
    elsewhere = PodAddress(
        "other", "mlflow-tracking-x", ready.labels, "10.42.1.9", ready.ports, ready=True
    )

    jobs = prometheus_config.scrape_configs(
        rendered.bodies("ServiceMonitor"),
        rendered.bodies("PodMonitor"),
        services_of(rendered),
        [ready, starting, no_address_yet, model_server, elsewhere],
    )

    by_name = {job["job_name"]: job for job in jobs}
    assert sorted(by_name) == [
        "podMonitor/ml-platform/postgres/0",
        *(
            f"serviceMonitor/ml-platform/{name}/0"
            for name in ("mlflow-tracking", "model-server", "promoter")
        ),
    ]
    # Each monitor selects its own component's pods only (the promoter has none here).
    assert set(targets_of(by_name["serviceMonitor/ml-platform/model-server/0"])) == {
        "10.42.0.7:8080"
    }
    assert targets_of(by_name["serviceMonitor/ml-platform/promoter/0"]) == {}
    job = by_name["serviceMonitor/ml-platform/mlflow-tracking/0"]
    assert job["scrape_interval"] == "30s"  # the manifest's own interval
    assert job["metrics_path"] == "/metrics"
    # Like the operator: every running pod behind the Service, ready or not (an unready pod is
    # in its Endpoints' notReadyAddresses, which Prometheus discovers too).
    assert targets_of(job) == {
        "10.42.0.5:5000": {
            "namespace": "ml-platform",
            "service": "mlflow-tracking",
            "pod": "mlflow-tracking-7d9f-a",
            "job": "mlflow-tracking",
            "endpoint": "http",
            "instance": "10.42.0.5:5000",
        },
        "10.42.0.6:5000": {
            "namespace": "ml-platform",
            "service": "mlflow-tracking",
            "pod": "mlflow-tracking-7d9f-b",
            "job": "mlflow-tracking",
            "endpoint": "http",
            "instance": "10.42.0.6:5000",
        },
    }
    # The repository's alert asks for exactly these labels: a rename on either side breaks it.
    rule = rendered.one("PrometheusRule", "mlflow-tracking")
    assert (
        'up{job="mlflow-tracking", namespace="ml-platform"}'
        in (rule["spec"]["groups"][0]["rules"][0]["expr"])
    )


def test_an_interval_override_replaces_every_jobs_interval(rendered: Rendered):
    monitor = rendered.one("ServiceMonitor", "mlflow-tracking")
    monitor["spec"]["endpoints"][0]["scrapeTimeout"] = "10s"
    [job] = prometheus_config.scrape_configs(
        [monitor], [], services_of(rendered), [], scrape_interval_override="1s"
    )
    # Prometheus refuses a timeout longer than the interval: the override shortens it.
    assert (job["scrape_interval"], job["scrape_timeout"]) == ("1s", "1s")
    assert job["static_configs"] == []


@pytest.mark.parametrize(
    "field",
    [
        "relabelings",
        "metricRelabelings",
        "tlsConfig",
        "bearerTokenFile",
        "bearerTokenSecret",
        "basicAuth",
        "authorization",
        "oauth2",
        "proxyUrl",
        "followRedirects",
        "enableHttp2",
    ],
)
def test_an_endpoint_field_the_run_does_not_honour_is_refused_by_name(
    rendered: Rendered, field: str
):
    monitor = rendered.one("ServiceMonitor", "mlflow-tracking")
    monitor["spec"]["endpoints"][0][field] = [{"action": "drop"}]
    with pytest.raises(UnsupportedManifest) as caught:
        prometheus_config.scrape_configs([monitor], [], services_of(rendered), [])
    assert str(caught.value) == (
        f"ServiceMonitor/ml-platform/mlflow-tracking: spec.endpoints[0].{field}: "
        "not supported by the local run"
    )


@pytest.mark.parametrize(
    "field", ["sampleLimit", "targetLimit", "labelLimit", "attachMetadata", "scrapeProtocols"]
)
def test_a_monitor_field_the_run_does_not_honour_is_refused_by_name(rendered: Rendered, field: str):
    monitor = rendered.one("ServiceMonitor", "mlflow-tracking")
    monitor["spec"][field] = 100
    with pytest.raises(UnsupportedManifest, match=rf"spec\.{field}: not supported by the local"):
        prometheus_config.scrape_configs([monitor], [], services_of(rendered), [])


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"interval": "half a minute"}, "interval", "is not a positive Prometheus duration"),
        ({"scrapeTimeout": "45s"}, "scrapeTimeout", "is longer than the scrape interval 30s"),
        ({"scheme": "ftp"}, "scheme", "is not http or https"),
        ({"filterRunning": False}, "filterRunning", "it knows only running pods"),
    ],
)
def test_a_bad_endpoint_value_names_its_field(
    rendered: Rendered, change: dict[str, Any], field: str, problem: str
):
    monitor = rendered.one("ServiceMonitor", "mlflow-tracking")
    monitor["spec"]["endpoints"][0].update(change)
    with pytest.raises(UnsupportedManifest) as caught:
        prometheus_config.scrape_configs([monitor], [], services_of(rendered), [])
    assert caught.value.field == f"spec.endpoints[0].{field}"
    assert problem in caught.value.problem


# -- ServiceMonitor semantics on small manifests ------------------------------------------------


def test_a_named_target_port_resolves_per_pod_and_skips_pods_without_it():
    jobs = prometheus_config.scrape_configs(
        [service_monitor("exporter")],
        [],
        [service("exporter")],
        [
            pod("exporter-a", "exporter", "10.0.0.1"),
            pod("exporter-b", "exporter", "10.0.0.2", ports=(ContainerPort("metrics", 9200),)),
            # No port named "metrics": the Endpoints controller leaves this pod out of the port.
            pod("exporter-c", "exporter", "10.0.0.3", ports=(ContainerPort("http", 8080),)),
        ],
    )
    assert addresses(jobs) == {"serviceMonitor/apps/exporter/0": ["10.0.0.1:9100", "10.0.0.2:9200"]}


def test_numbered_ports_are_chosen_by_target_port_and_labelled_with_it():
    unnamed = service("plain", ports=[{"port": 80, "targetPort": 8080}])
    pods = [pod("plain-a", "plain", "10.0.0.4", ports=(ContainerPort(None, 8080),))]
    by_target_port = service_monitor("plain", endpoints=[{"targetPort": 8080}])
    by_port_name = service_monitor("by-name", endpoints=[{"port": "http"}])

    jobs = prometheus_config.scrape_configs([by_target_port, by_port_name], [], [unnamed], pods)

    assert addresses(jobs) == {
        "serviceMonitor/apps/by-name/0": [],  # an unnamed Service port has no name to match
        "serviceMonitor/apps/plain/0": ["10.0.0.4:8080"],
    }
    assert targets_of(jobs[1])["10.0.0.4:8080"]["endpoint"] == "8080"


def test_port_wins_over_target_port_as_in_the_operator():
    web = service("web", ports=[{"name": "http", "port": 80, "targetPort": 8080}])
    pods = [pod("web-a", "web", "10.0.0.5", ports=(ContainerPort("web", 8080),))]
    monitor = service_monitor("both", endpoints=[{"port": "http", "targetPort": 9999}])
    [job] = prometheus_config.scrape_configs([monitor], [], [web], pods)
    assert targets_of(job)["10.0.0.5:8080"]["endpoint"] == "http"


def test_a_target_port_name_matches_the_container_ports_name():
    web = service("web", ports=[{"name": "http", "port": 80, "targetPort": 8080}])
    pods = [pod("web-a", "web", "10.0.0.5", ports=(ContainerPort("web", 8080),))]
    jobs = prometheus_config.scrape_configs(
        [
            service_monitor("by-container-name", endpoints=[{"targetPort": "web"}]),
            service_monitor("other-name", endpoints=[{"targetPort": "metrics"}]),
        ],
        [],
        [web],
        pods,
    )
    assert addresses(jobs) == {
        "serviceMonitor/apps/by-container-name/0": ["10.0.0.5:8080"],
        "serviceMonitor/apps/other-name/0": [],
    }


def test_a_service_without_a_selector_has_no_targets():
    jobs = prometheus_config.scrape_configs(
        [service_monitor("external")],
        [],
        [service("external", selector={})],
        [pod("anything", "external", "10.0.0.6")],
    )
    assert addresses(jobs) == {"serviceMonitor/apps/external/0": []}


def test_the_namespace_selector_decides_where_services_are_found():
    services = [service("exporter", namespace) for namespace in ("apps", "data", "tools")]
    pods = [
        pod(f"exporter-{namespace}", "exporter", ip, namespace)
        for namespace, ip in (("apps", "10.0.1.1"), ("data", "10.0.1.2"), ("tools", "10.0.1.3"))
    ]
    monitors = [
        service_monitor("own-namespace"),
        service_monitor("everywhere", namespaceSelector={"any": True}),
        service_monitor("listed", namespaceSelector={"matchNames": ["data", "tools"]}),
        service_monitor("empty-list", namespaceSelector={"any": False, "matchNames": []}),
    ]
    assert addresses(prometheus_config.scrape_configs(monitors, [], services, pods)) == {
        "serviceMonitor/apps/empty-list/0": ["10.0.1.1:9100"],
        "serviceMonitor/apps/everywhere/0": ["10.0.1.1:9100", "10.0.1.2:9100", "10.0.1.3:9100"],
        "serviceMonitor/apps/listed/0": ["10.0.1.2:9100", "10.0.1.3:9100"],
        "serviceMonitor/apps/own-namespace/0": ["10.0.1.1:9100"],
    }


def test_match_expressions_select_services_by_their_labels():
    services = [
        service("gold", labels={"tier": "gold", "monitored": "yes"}),
        service("silver", labels={"tier": "silver"}),
        service("bare", labels={}),
    ]
    pods = [
        pod(f"{name}-a", name, f"10.0.2.{i}") for i, name in enumerate(("gold", "silver", "bare"))
    ]

    def selected(expressions: list[dict[str, Any]]) -> list[str]:
        monitor = service_monitor("m", selector={"matchExpressions": expressions})
        [job] = prometheus_config.scrape_configs([monitor], [], services, pods)
        return sorted({labels["service"] for labels in targets_of(job).values()})

    assert selected([{"key": "tier", "operator": "In", "values": ["gold", "silver"]}]) == [
        "gold",
        "silver",
    ]
    assert selected([{"key": "tier", "operator": "NotIn", "values": ["gold"]}]) == [
        "bare",
        "silver",
    ]
    assert selected([{"key": "tier", "operator": "Exists"}]) == ["gold", "silver"]
    assert selected([{"key": "monitored", "operator": "DoesNotExist"}]) == ["bare", "silver"]
    with pytest.raises(UnsupportedManifest, match=r"matchExpressions\[0\]\.operator: 'Near'"):
        selected([{"key": "tier", "operator": "Near", "values": ["x"]}])


def test_job_label_takes_the_job_from_the_services_label():
    services = [
        service("api-v2", labels={"monitored": "yes", "app.kubernetes.io/name": "api"}),
        service("worker", labels={"monitored": "yes"}),
    ]
    pods = [pod("api-v2-a", "api-v2", "10.0.3.1"), pod("worker-a", "worker", "10.0.3.2")]
    monitor = service_monitor(
        "named",
        jobLabel="app.kubernetes.io/name",
        targetLabels=["app.kubernetes.io/name"],
        podTargetLabels=["app"],
    )
    [job] = prometheus_config.scrape_configs([monitor], [], services, pods)
    targets = targets_of(job)
    assert targets["10.0.3.1:9100"]["job"] == "api"
    assert targets["10.0.3.1:9100"]["app_kubernetes_io_name"] == "api"
    assert targets["10.0.3.1:9100"]["app"] == "api-v2"
    # A Service without the label keeps its own name as the job, as the operator's relabeling does.
    assert targets["10.0.3.2:9100"]["job"] == "worker"
    assert "app_kubernetes_io_name" not in targets["10.0.3.2:9100"]


def test_endpoint_settings_reach_the_scrape_job():
    monitor = service_monitor(
        "tuned",
        endpoints=[
            {
                "port": "metrics",
                "path": "/stats/prometheus",
                "scheme": "HTTPS",
                "interval": "15s",
                "scrapeTimeout": "5s",
                "params": {"format": ["prometheus"]},
                "honorLabels": True,
            },
            {"port": "metrics"},
        ],
    )
    first, second = prometheus_config.scrape_configs(
        [monitor], [], [service("tuned")], [pod("tuned-a", "tuned", "10.0.4.1")]
    )
    assert {key: value for key, value in first.items() if key != "static_configs"} == {
        "job_name": "serviceMonitor/apps/tuned/0",
        "honor_labels": True,
        "scrape_interval": "15s",
        "scrape_timeout": "5s",
        "metrics_path": "/stats/prometheus",
        "scheme": "https",
        "params": {"format": ["prometheus"]},
    }
    # Nothing set: the global 30s/10s apply, as kube-prometheus-stack's Prometheus has them.
    assert second["job_name"] == "serviceMonitor/apps/tuned/1"
    assert "scrape_interval" not in second and "scrape_timeout" not in second


def test_a_pod_monitor_selects_pods_by_their_labels_and_container_port_name():
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "workers", "namespace": "apps"},
        "spec": {
            "selector": {"matchLabels": {"role": "worker"}},
            "podMetricsEndpoints": [{"port": "metrics", "interval": "20s"}],
        },
    }
    pods = [
        pod("worker-a", "queue", "10.0.5.1", role="worker"),
        pod(
            "worker-b",
            "queue",
            "10.0.5.2",
            ports=(ContainerPort("http", 8080), ContainerPort("metrics", 9102)),
            role="worker",
        ),
        pod("web-a", "web", "10.0.5.3", role="web"),
        pod("worker-x", "queue", "10.0.5.4", "elsewhere", role="worker"),
    ]
    [job] = prometheus_config.scrape_configs([], [monitor], [], pods)
    assert job["job_name"] == "podMonitor/apps/workers/0"
    assert job["scrape_interval"] == "20s"
    assert targets_of(job) == {
        "10.0.5.1:9100": {
            "namespace": "apps",
            "pod": "worker-a",
            "job": "apps/workers",
            "endpoint": "metrics",
            "instance": "10.0.5.1:9100",
        },
        "10.0.5.2:9102": {
            "namespace": "apps",
            "pod": "worker-b",
            "job": "apps/workers",
            "endpoint": "metrics",
            "instance": "10.0.5.2:9102",
        },
    }
    monitor["spec"]["podMetricsEndpoints"][0]["relabelings"] = []
    with pytest.raises(UnsupportedManifest) as caught:
        prometheus_config.scrape_configs([], [monitor], [], pods)
    assert str(caught.value) == (
        "PodMonitor/apps/workers: spec.podMetricsEndpoints[0].relabelings: "
        "not supported by the local run"
    )


def test_prometheus_yaml_holds_the_jobs_rules_and_extra_jobs():
    standin = {"job_name": "kube-state-metrics", "static_configs": [{"targets": ["10.0.9.1:8080"]}]}
    [job] = prometheus_config.scrape_configs(
        [service_monitor("exporter")], [], [service("exporter")], []
    )
    document = yaml.safe_load(
        prometheus_config.prometheus_yaml([job], ["/rules/a.yaml"], "15s", [standin])
    )
    assert document == {
        "global": {"scrape_interval": "30s", "scrape_timeout": "10s", "evaluation_interval": "15s"},
        "rule_files": ["/rules/a.yaml"],
        "scrape_configs": [job, standin],
    }
    with pytest.raises(LocalRunError, match="scrape jobs named twice: kube-state-metrics"):
        prometheus_config.prometheus_yaml([], [], extra_scrape_configs=[standin, standin])


# -- rules --------------------------------------------------------------------------------------


def test_rule_files_hold_each_prometheusrules_groups(rendered: Rendered):
    rules = rendered.bodies("PrometheusRule")
    files = prometheus_config.rule_files(rules)
    assert sorted(files) == [
        "ml-platform-mlflow-tracking.yaml",
        "ml-platform-model-server.yaml",
        "ml-platform-postgres.yaml",
        "ml-platform-promoter.yaml",
    ]
    for body in rules:
        name = f"{body['metadata']['namespace']}-{body['metadata']['name']}.yaml"
        assert yaml.safe_load(files[name]) == {"groups": body["spec"]["groups"]}


def test_rule_fields_the_cluster_would_honour_and_prometheus_2_42_cannot_are_refused(
    rendered: Rendered,
):
    rule = rendered.one("PrometheusRule", "model-server")
    rule["spec"]["groups"][0]["query_offset"] = "1m"
    with pytest.raises(UnsupportedManifest) as caught:
        prometheus_config.rule_files([rule])
    assert str(caught.value) == (
        "PrometheusRule/ml-platform/model-server: spec.groups[0].query_offset: "
        "not supported by the local run"
    )
    # A Thanos-only field the operator drops for every Prometheus is dropped here too.
    rule = rendered.one("PrometheusRule", "model-server")
    rule["spec"]["groups"][0]["partial_response_strategy"] = "warn"
    text = prometheus_config.rule_files([rule])["ml-platform-model-server.yaml"]
    assert "partial_response_strategy" not in text


# -- what Prometheus itself makes of the configuration ------------------------------------------


def promtool_check_config(path: Path) -> tuple[int, str]:
    completed = subprocess.run(
        [PROMTOOL, "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed.returncode, completed.stdout + completed.stderr


def local_pods(rendered: Rendered) -> list[PodAddress]:
    """A pod of each monitored Deployment of local, and the PostgreSQL instance the PodMonitor
    selects, as the run reports them."""
    pods = [
        rendered.pod(name, f"{name}-5c4b-a", f"10.42.0.{index}")
        for index, name in enumerate(("mlflow-tracking", "model-server", "promoter"), start=2)
    ]
    monitor = rendered.one("PodMonitor", "postgres")
    labels = tuple(monitor["spec"]["selector"]["matchLabels"].items())
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    pods.append(
        PodAddress(
            "ml-platform",
            "postgres-1",
            labels,
            "10.42.0.9",
            (ContainerPort(endpoint["port"], operators.CNPG_METRICS_PORT),),
            True,
        )
    )
    return pods


@pytest.mark.parametrize("interval_override", [None, "2s"])
def test_promtool_accepts_the_local_environments_configuration_with_its_targets(
    rendered: Rendered, tmp_path: Path, interval_override: str | None
):
    pods = local_pods(rendered)
    jobs = prometheus_config.scrape_configs(
        rendered.bodies("ServiceMonitor"),
        rendered.bodies("PodMonitor"),
        services_of(rendered),
        pods,
        scrape_interval_override=interval_override,
    )
    rules = prometheus_config.rule_files(rendered.bodies("PrometheusRule"))
    rule_paths = write_rule_files(rules, tmp_path / "rules")
    config = tmp_path / "prometheus.yaml"
    config.write_text(prometheus_config.prometheus_yaml(jobs, [str(p) for p in rule_paths]))
    code, output = promtool_check_config(config)
    assert code == 0, output
    # promtool loaded every rule file the configuration names, and found its rules.
    for path in rule_paths:
        assert f"Checking {path}\n  SUCCESS: " in output, output
    # Each pod is scraped once, at the container port its Service's `http` target names (the
    # instance's `metrics` port for PostgreSQL).
    scraped = [address for job in jobs for address in targets_of(job)]
    assert sorted(scraped) == sorted(
        f"{pod.ip}:{pod.port_number('http') or pod.port_number('metrics')}" for pod in pods
    )


def test_a_timeout_longer_than_the_interval_is_refused_as_prometheus_refuses_it(
    rendered: Rendered, tmp_path: Path
):
    monitor = rendered.one("ServiceMonitor", "mlflow-tracking")
    monitor["spec"]["endpoints"][0].update(interval="5s", scrapeTimeout="10s")
    with pytest.raises(UnsupportedManifest, match="10s is longer than the scrape interval 5s"):
        prometheus_config.scrape_configs([monitor], [], services_of(rendered), [])
    # The job the operator would have written: Prometheus refuses to load it.
    [job] = prometheus_config.scrape_configs(
        [rendered.one("ServiceMonitor", "mlflow-tracking")], [], services_of(rendered), []
    )
    job.update(scrape_interval="5s", scrape_timeout="10s")
    config = tmp_path / "prometheus.yaml"
    config.write_text(prometheus_config.prometheus_yaml([job], []))
    code, output = promtool_check_config(config)
    assert code != 0
    assert "scrape timeout greater than scrape interval" in output

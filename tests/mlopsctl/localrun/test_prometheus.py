"""Prometheus for the local run: the operator's part (monitors and rules -> Prometheus' files),
promtool's checks, and a real Debian Prometheus on loopback driven through the client."""

from __future__ import annotations

import copy
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from mlopsctl.base import kustomize, resources, toolchain
from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.localrun import prometheus, prometheus_config, workloads
from mlopsctl.localrun.model import ContainerPort, PodAddress, Service
from tests.support.loopback import QuietHandler, serving
from tests.support.paths import REPOSITORY

ROOTS = (
    "overlays/local/mlflow-tracking",
    "overlays/local/model-server",
    "overlays/local/promoter",
    "overlays/local/postgres",
)
RUNBOOK = "https://github.com/example-org/mlops-platform/blob/main/docs/runbook.md#"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"

T = TypeVar("T")


# -- the repository's rendered manifests --------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    objects: list[resources.Resource]

    def bodies(self, kind: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(item.body) for item in self.objects if item.kind == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        [body] = [body for body in self.bodies(kind) if body["metadata"]["name"] == name]
        return body

    def pod(self, deployment: str, name: str, ip: str, ready: bool = True) -> PodAddress:
        """A pod of a rendered Deployment, as the run would report it."""
        template = self.one("Deployment", deployment)["spec"]["template"]
        ports = tuple(
            ContainerPort(port.get("name"), port["containerPort"])
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
        )
        return PodAddress(
            namespace=self.one("Deployment", deployment)["metadata"]["namespace"],
            name=name,
            labels=tuple(sorted(template["metadata"]["labels"].items())),
            ip=ip,
            ports=ports,
            ready=ready,
        )


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    tools = toolchain.resolve(toolchain.default_tools_dir(REPOSITORY))
    results = kustomize.render_roots(REPOSITORY, list(ROOTS), tools)
    objects: list[resources.Resource] = []
    for result in results:
        assert result.rendered, f"{result.root}: {result.error or result.network}"
        objects.extend(resources.parse_render(result.root, result.output))
    return Rendered(objects)


def services_of(rendered: Rendered) -> list[Service]:
    return [workloads.service(body) for body in rendered.bodies("Service")]


def targets_of(job: dict[str, Any]) -> dict[str, dict[str, str]]:
    """address -> target labels of one scrape job."""
    found: dict[str, dict[str, str]] = {}
    for group in job["static_configs"]:
        [address] = group["targets"]
        found[address] = group["labels"]
    return found


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


def service_monitor(name: str, namespace: str = "apps", **spec: Any) -> dict[str, Any]:
    spec.setdefault("selector", {"matchLabels": {"monitored": "yes"}})
    spec.setdefault("endpoints", [{"port": "metrics"}])
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def service(
    name: str,
    namespace: str = "apps",
    ports: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    selector: dict[str, str] | None = None,
) -> Service:
    return workloads.service(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"monitored": "yes"} if labels is None else labels,
            },
            "spec": {
                "selector": {"app": name} if selector is None else selector,
                "ports": ports or [{"name": "metrics", "port": 9000, "targetPort": "metrics"}],
            },
        }
    )


def pod(
    name: str,
    app: str,
    ip: str,
    namespace: str = "apps",
    ports: tuple[ContainerPort, ...] = (ContainerPort("metrics", 9100),),
    **labels: str,
) -> PodAddress:
    return PodAddress(namespace, name, tuple({"app": app, **labels}.items()), ip, ports, True)


def addresses(jobs: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {job["job_name"]: sorted(targets_of(job)) for job in jobs}


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


def write_rule_files(files: dict[str, str], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def test_promtool_accepts_the_repositorys_rules(rendered: Rendered, tmp_path: Path):
    files = prometheus_config.rule_files(rendered.bodies("PrometheusRule"))
    prometheus.check_rules(write_rule_files(files, tmp_path), promtool=PROMTOOL)


RULE_TESTS = REPOSITORY / "tests" / "rules"


def promtool_test_rules(files: dict[str, str], directory: Path) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` over every unit-test file in tests/rules, beside the rendered rules."""
    write_rule_files(files, directory)
    tests = []
    for source in sorted(RULE_TESTS.glob("*.test.yaml")):
        shutil.copy(source, directory / source.name)
        tests.append(source.name)
    return subprocess.run(
        [PROMTOOL, "test", "rules", *tests],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_alert_has_unit_tests_that_fire_it_and_that_do_not(rendered: Rendered):
    files = prometheus_config.rule_files(rendered.bodies("PrometheusRule"))
    fired: set[str] = set()
    quiet: set[str] = set()
    tested_files: set[str] = set()
    for path in RULE_TESTS.glob("*.test.yaml"):
        document = yaml.safe_load(path.read_text())
        tested_files.update(document["rule_files"])
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {
        rule["alert"]
        for text in files.values()
        for group in yaml.safe_load(text)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert tested_files == set(files), "each rendered rule file has its unit tests"
    assert alerts - fired == set(), "alerts no unit test expects to fire"
    assert alerts - quiet == set(), "alerts no unit test expects to stay quiet"


def test_every_alert_says_what_to_do_and_links_its_runbook(rendered: Rendered):
    runbook = (REPOSITORY / "docs/runbook.md").read_text()
    alerts = [
        rule
        for body in rendered.bodies("PrometheusRule")
        for group in body["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert len(alerts) >= 9
    for rule in alerts:
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip()
        assert annotations["runbook_url"] == RUNBOOK + rule["alert"].lower()
        assert f"\n## {rule['alert']}\n\n*{rule['labels']['severity']}*: " in runbook


def test_the_alert_rules_pass_their_promtool_unit_tests(rendered: Rendered, tmp_path: Path):
    files = prometheus_config.rule_files(rendered.bodies("PrometheusRule"))
    result = promtool_test_rules(files, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_unit_tests_catch_a_rule_that_waits_too_long(rendered: Rendered, tmp_path: Path):
    rule = rendered.one("PrometheusRule", "model-server")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "10m"
    others = [
        body
        for body in rendered.bodies("PrometheusRule")
        if body["metadata"]["name"] != "model-server"
    ]
    files = prometheus_config.rule_files([rule, *others])
    result = promtool_test_rules(files, tmp_path)
    assert result.returncode != 0
    assert "ModelServerUnavailable" in result.stdout + result.stderr


def test_promtool_refuses_a_broken_rule_naming_file_and_prometheusrule(
    rendered: Rendered, tmp_path: Path
):
    rules = rendered.bodies("PrometheusRule")
    broken = next(body for body in rules if body["metadata"]["name"] == "model-server")
    broken["spec"]["groups"][0]["rules"][0]["expr"] = "sum(kube_deployment_status_replicas"
    paths = write_rule_files(prometheus_config.rule_files(rules), tmp_path)

    with pytest.raises(LocalRunError) as caught:
        prometheus.check_rules(
            paths, promtool=PROMTOOL, origins=prometheus_config.rule_file_origins(rules)
        )

    message = str(caught.value)
    assert (
        f"{tmp_path}/ml-platform-model-server.yaml (from PrometheusRule/ml-platform/model-server)"
        in message
    )
    assert "ModelServerUnavailable" in message
    assert "unclosed left parenthesis" in message
    assert "mlflow-tracking" not in message  # the good file is not blamed


def test_check_rules_says_when_promtool_is_missing(tmp_path: Path):
    with pytest.raises(LocalRunError, match="promtool not found"):
        prometheus.check_rules([tmp_path / "x.yaml"], promtool=str(tmp_path / "no-promtool"))


# -- a real Prometheus on loopback --------------------------------------------------------------


class MetricsHandler(QuietHandler):
    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.reply(404, b"not found\n", "text/plain")
            return
        body = b"# TYPE demo_requests_total counter\ndemo_requests_total 7\n"
        self.reply(200, body, "text/plain; version=0.0.4")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, log: Path) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise AssertionError(f"no {what} after {timeout} s; Prometheus' log ends:\n{tail}")
        time.sleep(0.25)


@pytest.fixture
def metrics_url() -> Iterator[str]:
    with serving(MetricsHandler) as url:
        yield url


@dataclass
class RunningPrometheus:
    client: prometheus.PrometheusClient
    config_file: Path
    log: Path


@pytest.fixture
def running_prometheus(tmp_path: Path) -> Iterator[RunningPrometheus]:
    if not Path(PROMETHEUS).is_file():
        pytest.fail("Debian's prometheus package is missing (/usr/bin/prometheus)")
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(prometheus_config.prometheus_yaml([], [], "1s"), encoding="utf-8")
    log = tmp_path / "prometheus.log"
    port = free_port()
    with log.open("w") as log_stream:
        process = subprocess.Popen(
            prometheus.command(config_file, tmp_path / "data", f"127.0.0.1:{port}", PROMETHEUS),
            stdout=log_stream,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        client = prometheus.PrometheusClient(f"http://127.0.0.1:{port}")
        client.wait_until_ready(timeout=30)
        yield RunningPrometheus(client, config_file, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        shutil.rmtree(tmp_path / "data", ignore_errors=True)


RULES = """\
groups:
  - name: always
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        for: 0s
        labels: {severity: info}
        annotations: {summary: fires on its first evaluation}
  - name: demo-exporter
    rules:
      - alert: DemoExporterDown
        expr: up{job="demo-exporter"} == 0
        for: 0s
"""


def test_prometheus_scrapes_the_monitors_targets_and_fires_the_rules_alerts(
    running_prometheus: RunningPrometheus, metrics_url: str, tmp_path: Path
):
    client, log = running_prometheus.client, running_prometheus.log
    live_port = int(metrics_url.rsplit(":", 1)[1])
    dead_port = free_port()  # nothing listens there
    metrics_port = [{"name": "metrics", "port": 80, "targetPort": "metrics"}]
    services = [
        service("demo-exporter", ports=metrics_port),
        service("gone", ports=metrics_port, labels={"gone": "true"}),
    ]
    pods = [
        pod(
            "demo-exporter-a",
            "demo-exporter",
            "127.0.0.1",
            ports=(ContainerPort("metrics", live_port),),
        ),
        pod("gone-a", "gone", "127.0.0.1", ports=(ContainerPort("metrics", dead_port),)),
    ]
    rule_paths = write_rule_files({"apps-demo.yaml": RULES}, tmp_path / "rules")
    prometheus.check_rules(rule_paths, promtool=PROMTOOL)

    def configure(monitors: list[dict[str, Any]]) -> None:
        jobs = prometheus_config.scrape_configs(
            monitors, [], services, pods, scrape_interval_override="1s"
        )
        running_prometheus.config_file.write_text(
            prometheus_config.prometheus_yaml(jobs, [str(path) for path in rule_paths], "1s"),
            encoding="utf-8",
        )
        client.reload()

    exporter_monitor = service_monitor("demo-exporter")
    configure([exporter_monitor])

    assert sorted(client.rules_loaded()) == ["always", "demo-exporter"]
    up = wait_for(lambda: client.query('up{job="demo-exporter"}'), 30, "sample of up", log)
    assert up == [
        (
            {
                "__name__": "up",
                "endpoint": "metrics",
                "instance": f"127.0.0.1:{live_port}",
                "job": "demo-exporter",
                "namespace": "apps",
                "pod": "demo-exporter-a",
                "service": "demo-exporter",
            },
            1.0,
        )
    ]
    assert client.query("demo_requests_total")[0][1] == 7.0
    firing = wait_for(
        lambda: [alert for alert in client.alerts() if alert.state == "firing"], 15, "alert", log
    )
    assert [
        (alert.name, alert.labels["severity"], alert.annotations["summary"]) for alert in firing
    ] == [("AlwaysFiring", "info", "fires on its first evaluation")]

    # A second monitor, picked up by a reload: its target does not answer.
    configure(
        [exporter_monitor, service_monitor("gone", selector={"matchLabels": {"gone": "true"}})]
    )

    def gone_target() -> prometheus.Target | None:
        for target in client.targets():
            if target.pool == "serviceMonitor/apps/gone/0" and target.health == "down":
                return target
        return None

    target = wait_for(gone_target, 30, "down target for the second monitor", log)
    assert target.job == "gone"
    assert target.scrape_url == f"http://127.0.0.1:{dead_port}/metrics"
    assert "connection refused" in target.last_error
    assert client.query('up{job="gone"}')[0][1] == 0.0
    assert {target.pool: target.health for target in client.targets()} == {
        "serviceMonitor/apps/demo-exporter/0": "up",
        "serviceMonitor/apps/gone/0": "down",
    }
    # The exporter's own alert stays quiet: its target is up.
    assert "DemoExporterDown" not in {alert.name for alert in client.alerts()}


def test_prometheus_errors_carry_prometheus_message(running_prometheus: RunningPrometheus):
    client = running_prometheus.client
    with pytest.raises(LocalRunError, match=r'HTTP 400: invalid parameter "query".*parse error'):
        client.query("sum(up")
    with pytest.raises(LocalRunError, match="gives a matrix"):
        client.query("up[1m]")

    running_prometheus.config_file.write_text("scrape_configs: [{job_name: x, bogus: 1}]\n")
    with pytest.raises(LocalRunError, match="field bogus not found"):
        client.reload()
    assert client.ready()  # a refused reload keeps the previous configuration running

    stopped = prometheus.PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=1)
    assert not stopped.ready()
    with pytest.raises(LocalRunError, match="cannot connect"):
        stopped.targets()

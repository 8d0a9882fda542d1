"""Prometheus for the local run: promtool's checks of the rendered rules (and the rules' own unit
tests), and a real Debian Prometheus on loopback driven through the client, scraping what the
monitors select. The operator's part (monitors and rules -> these files) is
test_prometheus_config.py's."""

from __future__ import annotations

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

from mlopsctl.base.errors import LocalRunError
from mlopsctl.localrun import prometheus, prometheus_config
from mlopsctl.localrun.model import ContainerPort
from tests.support.loopback import QuietHandler, serving
from tests.support.monitoring import (
    PROMETHEUS,
    PROMTOOL,
    Rendered,
    pod,
    render,
    service,
    service_monitor,
    write_rule_files,
)
from tests.support.paths import REPOSITORY

RUNBOOK = "https://github.com/example-org/mlops-platform/blob/main/docs/runbook.md#"

T = TypeVar("T")


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return render()


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

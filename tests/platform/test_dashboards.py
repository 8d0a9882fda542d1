"""The Grafana dashboards the platform ships: valid, loadable by the chart's sidecar from every
environment, the data source a template variable, a unit on every panel, and every query parsed
by promtool. (That each query returns series is checked in the local run of the platform:
tests/mlopsctl/localrun/test_local_run.py.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from mlopsctl.base import kustomize, toolchain
from mlopsctl.base.resources import parse_render
from tests.support.chart_values import chart_values
from tests.support.dashboards import DASHBOARD_FILES, load, panels, queries
from tests.support.paths import REPOSITORY, TOOLS_DIR

ENVIRONMENTS = ("local", "staging", "production")
DATA_SOURCE = {"type": "prometheus", "uid": "${datasource}"}


def promtool_parse(expressions: list[str], directory: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` over one recording rule per expression: it parses each."""
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": expression}
                    for index, expression in enumerate(expressions)
                ],
            }
        ]
    }
    path = directory / "queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    return subprocess.run(
        ["promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_ml_platform_dashboard_is_shipped():
    assert [path.relative_to(REPOSITORY).as_posix() for path in DASHBOARD_FILES] == [
        "base/platform/dashboards/ml-platform.json"
    ]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_every_panel_reads_the_chosen_data_source_and_has_a_unit(path: Path):
    dashboard = load(path)
    assert dashboard["uid"] and dashboard["title"]
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    for panel in panels(dashboard):
        assert panel["datasource"] == DATA_SOURCE, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"
        assert panel.get("description"), f"{panel['title']}: no description"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATA_SOURCE, panel["title"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_every_query_parses(path: Path, tmp_path: Path):
    expressions = [expression for _title, expression in queries(load(path))]
    result = promtool_parse(expressions, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout


def test_promtool_refuses_a_query_that_does_not_parse(tmp_path: Path):
    result = promtool_parse(["sum(rate(model_server_requests_total[5m])"], tmp_path)
    assert result.returncode != 0
    assert "unclosed left parenthesis" in result.stdout + result.stderr


def test_the_ml_dashboard_shows_what_a_promotion_changes():
    expressions = " ".join(e for _t, e in queries(load(DASHBOARD_FILES[0])))
    # Predictions, latency percentiles and errors per model version; the version served.
    for needed in (
        "sum by (model, version) (rate(model_server_requests_total",
        "histogram_quantile(0.5, sum by (model, version, le)",
        "histogram_quantile(0.95, sum by (model, version, le)",
        "histogram_quantile(0.99, sum by (model, version, le)",
        "model_server_request_errors_total",
        "model_server_model_info",
        # The tracking server, the promoter, PostgreSQL.
        "mlflow_http_request_total",
        "mlflow_http_request_duration_seconds_bucket",
        "mlopsctl_promotions_total",
        "mlopsctl_pins_out_of_step",
        "time() - max(mlopsctl_last_successful_reconcile_timestamp_seconds)",
        "cnpg_collector_up",
        "cnpg_backends_total",
        "cnpg_pg_database_size_bytes",
    ):
        assert needed in expressions, needed


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_environment_ships_the_dashboards_where_grafana_looks(environment: str):
    result = kustomize.render_root(
        REPOSITORY, f"overlays/{environment}/platform", toolchain.resolve(TOOLS_DIR), False
    )
    config_maps = {
        resource.name: resource.body
        for resource in parse_render("platform", result.output)
        if resource.kind == "ConfigMap"
    }
    for path in DASHBOARD_FILES:
        body = config_maps[f"grafana-dashboard-{path.stem}"]  # no hash suffix: one copy
        assert body["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(body["data"][path.name]) == load(path)
    sidecar = chart_values(environment, "kube-prometheus-stack")["grafana"]["sidecar"]
    assert sidecar["dashboards"]["searchNamespace"] == "ALL"

"""The charts' values as each environment's Application hands them to Helm, and where each chart
takes the resources of the workloads it runs (the charts themselves cannot be fetched here: these
are the values paths of kube-prometheus-stack 88.1.3 with its grafana, kube-state-metrics and
prometheus-node-exporter subcharts, external-secrets 2.6.0 and cloudnative-pg 0.27.0)."""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

import yaml

from mlopsctl.base import kustomize, toolchain
from mlopsctl.base.resources import parse_render
from tests.support.paths import REPOSITORY, TOOLS_DIR


class ChartWorkload(NamedTuple):
    row: str
    chart: str
    # (values path holding `resources`, how many such containers each pod runs)
    containers: tuple[tuple[str, int], ...]
    # values path of the replica count; None for one replica
    replicas: str | None


CHART_WORKLOADS = (
    ChartWorkload(
        "Prometheus (and its config reloader)",
        "kube-prometheus-stack",
        (("prometheus.prometheusSpec", 1), ("prometheusOperator.prometheusConfigReloader", 1)),
        "prometheus.prometheusSpec.replicas",
    ),
    ChartWorkload(
        "Alertmanager (and its config reloader)",
        "kube-prometheus-stack",
        (("alertmanager.alertmanagerSpec", 1), ("prometheusOperator.prometheusConfigReloader", 1)),
        "alertmanager.alertmanagerSpec.replicas",
    ),
    ChartWorkload(
        "Grafana (and its 2 sidecars)",
        "kube-prometheus-stack",
        (("grafana", 1), ("grafana.sidecar", 2)),
        "grafana.replicas",
    ),
    ChartWorkload(
        "Prometheus operator", "kube-prometheus-stack", (("prometheusOperator", 1),), None
    ),
    ChartWorkload(
        "kube-state-metrics", "kube-prometheus-stack", (("kube-state-metrics", 1),), None
    ),
    ChartWorkload(
        "node-exporter (per node)",
        "kube-prometheus-stack",
        (("prometheus-node-exporter", 1),),
        None,
    ),
    ChartWorkload("CloudNativePG operator", "cloudnative-pg", (("", 1),), "replicaCount"),
    ChartWorkload("External Secrets controller", "external-secrets", (("", 1),), "replicaCount"),
    ChartWorkload(
        "External Secrets webhook", "external-secrets", (("webhook", 1),), "webhook.replicaCount"
    ),
    ChartWorkload(
        "External Secrets cert controller",
        "external-secrets",
        (("certController", 1),),
        "certController.replicaCount",
    ),
)
# Short Jobs the charts run (not in the totals): the operator webhook's certificate patch.
CHART_JOBS = (("kube-prometheus-stack", "prometheusOperator.admissionWebhooks.patch"),)


def merge(base: Any, override: Any) -> Any:
    """Helm's merge of values files: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return override


@cache
def applications(environment: str) -> dict[str, dict[str, Any]]:
    """apps/<env> rendered: the environment's Applications by component."""
    root = f"apps/{environment}"
    result = kustomize.render_root(REPOSITORY, root, toolchain.resolve(TOOLS_DIR), False)
    assert result.error is None, result.error
    return {
        resource.labels["app.kubernetes.io/name"]: resource.body
        for resource in parse_render(root, result.output)
        if resource.kind == "Application"
    }


def chart_values(environment: str, chart: str) -> dict[str, Any]:
    """The values of `chart` in `environment`: its Application's value files, in order."""
    application = applications(environment)[chart]
    (helm_source,) = [s for s in application["spec"]["sources"] if "chart" in s]
    values: dict[str, Any] = {}
    for value_file in helm_source["helm"]["valueFiles"]:
        relative = value_file.removeprefix("$values/")
        values = merge(values, yaml.safe_load((REPOSITORY / relative).read_text()) or {})
    return values


def at(values: Any, path: str) -> Any:
    """The value at a dotted path ("" is the whole), None where any step is missing."""
    for key in filter(None, path.split(".")):
        values = values.get(key) if isinstance(values, dict) else None
    return values

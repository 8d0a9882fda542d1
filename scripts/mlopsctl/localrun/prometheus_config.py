"""Prometheus' files from rendered ServiceMonitors, PodMonitors and PrometheusRules.

On a cluster the Prometheus Operator (kube-prometheus-stack) turns those objects into
Prometheus' configuration; the local run cannot render that chart offline, so this module plays
the operator's part for the fields the platform uses, with the operator's semantics:

- a ServiceMonitor selects Services by the Services' labels, in the namespaces of its
  `namespaceSelector` (its own namespace when absent); each of its endpoints becomes one scrape
  job `serviceMonitor/<namespace>/<name>/<index>` whose targets are the pods behind the selected
  Services, labelled `job`, `namespace`, `service`, `pod`, `endpoint` and `instance`;
- a PodMonitor selects pods by their labels; each entry of `podMetricsEndpoints` becomes the job
  `podMonitor/<namespace>/<name>/<index>` over the pods' declared container ports (Prometheus'
  port-free target for a container that declares none, only useful with relabelings, is not
  made);
- a PrometheusRule becomes one rule file `<namespace>-<name>.yaml` holding its `groups`.

Targets are written as `static_configs` (the run knows every pod address and writes the file again
when pods change), not as Kubernetes service discovery: there is no API server to discover from.

Like the operator, the pods behind a Service are scraped whether or not they are ready: the
operator only drops pods that have finished (Failed, Succeeded), and Prometheus' endpoint
discovery lists an Endpoints object's not-ready addresses too. A pod still starting is therefore
a target that is down, as on the cluster.

A field the operator would translate and this module does not (relabelings, TLS, authentication,
limits...) is refused with `UnsupportedManifest`, never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.localrun.model import ContainerPort, ObjectReference, PodAddress, Service
from mlopsctl.localrun.workloads import list_at, mapping_at

# kube-prometheus-stack's defaults for its Prometheus (the operator's defaults, which the chart
# does not change and this repository's values do not set).
DEFAULT_SCRAPE_INTERVAL = "30s"
DEFAULT_SCRAPE_TIMEOUT = "10s"
DEFAULT_EVALUATION_INTERVAL = "30s"
DEFAULT_METRICS_PATH = "/metrics"

# Prometheus' duration syntax (prometheus/common model.ParseDuration).
_DURATION = re.compile(
    r"^(?:(?P<y>\d+)y)?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?"
    r"(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$"
)
_DURATION_MILLISECONDS = {
    "y": 365 * 24 * 3600 * 1000,
    "w": 7 * 24 * 3600 * 1000,
    "d": 24 * 3600 * 1000,
    "h": 3600 * 1000,
    "m": 60 * 1000,
    "s": 1000,
    "ms": 1,
}
_LABEL_NAME_INVALID = re.compile(r"[^a-zA-Z0-9_]")

# Fields of a scrape endpoint (ServiceMonitor `endpoints[]`, PodMonitor `podMetricsEndpoints[]`)
# the local run honours; any other field is refused by name.
_ENDPOINT_FIELDS = frozenset(
    {
        "path",
        "scheme",
        "interval",
        "scrapeTimeout",
        "params",
        "honorLabels",
        "honorTimestamps",
        "filterRunning",
    }
)
_SERVICE_ENDPOINT_FIELDS = _ENDPOINT_FIELDS | {"port", "targetPort"}
_POD_ENDPOINT_FIELDS = _ENDPOINT_FIELDS | {"port", "portNumber", "targetPort"}
_SERVICE_MONITOR_FIELDS = frozenset(
    {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels"}
)
_POD_MONITOR_FIELDS = frozenset(
    {"selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel", "podTargetLabels"}
)
_SELECTOR_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})
# Rule group fields Prometheus 2.42 reads. The operator drops `partial_response_strategy` (a
# Thanos field) for every Prometheus; the cluster's newer Prometheus would honour the others
# (`query_offset`, group `labels`), so the local run refuses them rather than drop them.
_RULE_GROUP_FIELDS = frozenset({"name", "interval", "rules", "limit", "partial_response_strategy"})


def parse_duration_milliseconds(value: str) -> int | None:
    """A Prometheus duration (`30s`, `1m30s`, `500ms`) in milliseconds; None when malformed."""
    if value == "0":
        return 0
    match = _DURATION.match(value)
    if not value or match is None:
        return None
    return sum(
        int(amount) * _DURATION_MILLISECONDS[unit]
        for unit, amount in match.groupdict().items()
        if amount is not None
    )


def sanitize_label_name(name: str) -> str:
    """A Kubernetes label key as the operator writes it as a Prometheus label name."""
    return _LABEL_NAME_INVALID.sub("_", name)


# -- selectors ----------------------------------------------------------------------------------

LabelPredicate = Callable[[Mapping[str, str]], bool]


def label_selector(raw: Any, resource: object, field: str) -> LabelPredicate:
    """A `metav1.LabelSelector` (matchLabels, matchExpressions) as a predicate on label sets.

    An empty selector selects everything, as the operator reads a monitor's `selector: {}`.
    """
    selector = mapping_at(raw, resource, field)
    _refuse_unknown(selector, frozenset({"matchLabels", "matchExpressions"}), resource, field)
    match_labels = {
        str(key): _string(value, resource, f"{field}.matchLabels.{key}")
        for key, value in mapping_at(
            selector.get("matchLabels"), resource, f"{field}.matchLabels"
        ).items()
    }
    expressions: list[tuple[str, str, frozenset[str]]] = []
    for index, raw_expression in enumerate(
        list_at(selector.get("matchExpressions"), resource, f"{field}.matchExpressions")
    ):
        where = f"{field}.matchExpressions[{index}]"
        expression = mapping_at(raw_expression, resource, where)
        key = _string(expression.get("key"), resource, f"{where}.key")
        operator = expression.get("operator")
        if operator not in _SELECTOR_OPERATORS:
            raise UnsupportedManifest(
                resource,
                f"{where}.operator",
                f"{operator!r} is not one of {', '.join(sorted(_SELECTOR_OPERATORS))}",
            )
        values = frozenset(
            _string(value, resource, f"{where}.values[{value_index}]")
            for value_index, value in enumerate(
                list_at(expression.get("values"), resource, f"{where}.values")
            )
        )
        if operator in ("In", "NotIn") and not values:
            raise UnsupportedManifest(resource, f"{where}.values", f"{operator} needs values")
        if operator in ("Exists", "DoesNotExist") and values:
            raise UnsupportedManifest(resource, f"{where}.values", f"{operator} takes no values")
        expressions.append((key, str(operator), values))

    def matches(labels: Mapping[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in match_labels.items()):
            return False
        for key, operator, values in expressions:
            present = key in labels
            if operator == "In" and not (present and labels[key] in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
        return True

    return matches


def namespace_selector(raw: Any, own_namespace: str, resource: object) -> Callable[[str], bool]:
    """A monitor's `namespaceSelector`: `any: true`, `matchNames`, or (absent) its own namespace."""
    selector = mapping_at(raw, resource, "spec.namespaceSelector")
    _refuse_unknown(selector, frozenset({"any", "matchNames"}), resource, "spec.namespaceSelector")
    if _boolean(selector.get("any"), resource, "spec.namespaceSelector.any", default=False):
        return lambda _namespace: True
    names = frozenset(
        _string(name, resource, f"spec.namespaceSelector.matchNames[{index}]")
        for index, name in enumerate(
            list_at(selector.get("matchNames"), resource, "spec.namespaceSelector.matchNames")
        )
    )
    if not names:
        return lambda namespace: namespace == own_namespace
    return lambda namespace: namespace in names


# -- scrape configs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    """The scrape settings of one endpoint, already checked."""

    path: str
    scheme: str | None
    interval: str | None
    scrape_timeout: str | None
    params: dict[str, list[str]] | None
    honor_labels: bool
    honor_timestamps: bool | None


def scrape_configs(
    service_monitors: Sequence[dict[str, Any]],
    pod_monitors: Sequence[dict[str, Any]],
    services: Sequence[Service],
    pods: Sequence[PodAddress],
    scrape_interval_override: str | None = None,
) -> list[dict[str, Any]]:
    """Prometheus `scrape_configs` for the rendered monitors, over the run's Services and pods.

    Each job scrapes at the interval its manifest asks for (the operator's default, 30s, when it
    names none). `scrape_interval_override` replaces every job's interval (tests pass `1s` so
    they need not wait for a 30s scrape); a manifest's scrapeTimeout longer than the override is
    shortened to it, since Prometheus refuses a timeout longer than the interval.
    """
    if scrape_interval_override is not None and not parse_duration_milliseconds(
        scrape_interval_override
    ):
        raise LocalRunError(
            f"scrape interval override {scrape_interval_override!r} is not a positive "
            "Prometheus duration"
        )
    jobs: list[dict[str, Any]] = []
    for body in sorted(service_monitors, key=_namespaced_name):
        jobs.extend(_service_monitor_jobs(body, services, pods, scrape_interval_override))
    for body in sorted(pod_monitors, key=_namespaced_name):
        jobs.extend(_pod_monitor_jobs(body, pods, scrape_interval_override))
    return jobs


def _service_monitor_jobs(
    body: dict[str, Any],
    services: Sequence[Service],
    pods: Sequence[PodAddress],
    interval_override: str | None,
) -> list[dict[str, Any]]:
    resource = _reference(body, "ServiceMonitor")
    spec = mapping_at(body.get("spec"), resource, "spec")
    _refuse_unknown(spec, _SERVICE_MONITOR_FIELDS, resource, "spec")
    if "selector" not in spec:
        raise UnsupportedManifest(resource, "spec.selector", "is required")
    selects_service = label_selector(spec.get("selector"), resource, "spec.selector")
    in_namespace = namespace_selector(spec.get("namespaceSelector"), resource.namespace, resource)
    job_label = _optional_string(spec.get("jobLabel"), resource, "spec.jobLabel")
    target_labels = _strings(spec.get("targetLabels"), resource, "spec.targetLabels")
    pod_target_labels = _strings(spec.get("podTargetLabels"), resource, "spec.podTargetLabels")
    endpoints = list_at(spec.get("endpoints"), resource, "spec.endpoints")
    if not endpoints:
        raise UnsupportedManifest(resource, "spec.endpoints", "names no endpoint to scrape")

    selected_services = sorted(
        (
            service
            for service in services
            if in_namespace(service.reference.namespace) and selects_service(dict(service.labels))
        ),
        key=lambda service: (service.reference.namespace, service.reference.name),
    )
    jobs: list[dict[str, Any]] = []
    for index, raw_endpoint in enumerate(endpoints):
        where = f"spec.endpoints[{index}]"
        entry = mapping_at(raw_endpoint, resource, where)
        _refuse_unknown(entry, _SERVICE_ENDPOINT_FIELDS, resource, where)
        settings = _endpoint_settings(entry, resource, where)
        port_name = _optional_string(entry.get("port"), resource, f"{where}.port")
        target_port = _int_or_string(entry.get("targetPort"), resource, f"{where}.targetPort")
        # The operator's precedence: `port` wins over `targetPort`.
        if port_name is not None:
            target_port = None
        endpoint_label = port_name if port_name is not None else _text(target_port)

        groups: list[dict[str, Any]] = []
        for service in selected_services:
            for pod, number in _service_targets(service, pods, port_name, target_port):
                address = f"{pod.ip}:{number}"
                labels = {
                    "namespace": service.reference.namespace,
                    "service": service.reference.name,
                    "pod": pod.name,
                }
                service_labels = dict(service.labels)
                labels.update(_copied_labels(target_labels, service_labels))
                labels.update(_copied_labels(pod_target_labels, pod.label_map))
                labels["job"] = (job_label and service_labels.get(job_label)) or (
                    service.reference.name
                )
                if endpoint_label is not None:
                    labels["endpoint"] = endpoint_label
                labels["instance"] = address
                groups.append({"targets": [address], "labels": labels})
        jobs.append(
            _job(
                f"serviceMonitor/{resource.namespace}/{resource.name}/{index}",
                settings,
                groups,
                interval_override,
            )
        )
    return jobs


def _service_targets(
    service: Service,
    pods: Sequence[PodAddress],
    port_name: str | None,
    target_port: str | int | None,
) -> list[tuple[PodAddress, int]]:
    """(pod, port) pairs the Service's Endpoints would list for the endpoint's port choice."""
    # A Service without a selector gets no Endpoints from Kubernetes (someone writes them by
    # hand); `model.selects` would read the empty selector as "every pod".
    if not service.selector:
        return []
    selected = sorted(
        (
            pod
            for pod in pods
            if pod.namespace == service.reference.namespace
            and pod.ip
            and all(pod.label_map.get(key) == value for key, value in service.selector)
        ),
        key=lambda pod: pod.name,
    )
    targets: list[tuple[PodAddress, int]] = []
    for service_port in service.ports:
        if port_name is not None and service_port.name != port_name:
            continue
        for pod in selected:
            # The Endpoints controller leaves a pod out of a port whose named target the pod
            # does not declare.
            number = pod.port_number(service_port.target)
            if number is None:
                continue
            if target_port is not None and not _container_port_matches(
                pod.ports, number, target_port
            ):
                continue
            targets.append((pod, number))
    return targets


def _container_port_matches(
    ports: Sequence[ContainerPort], number: int, target_port: str | int
) -> bool:
    if isinstance(target_port, int):
        return number == target_port
    return any(port.number == number and port.name == target_port for port in ports)


def _pod_monitor_jobs(
    body: dict[str, Any], pods: Sequence[PodAddress], interval_override: str | None
) -> list[dict[str, Any]]:
    resource = _reference(body, "PodMonitor")
    spec = mapping_at(body.get("spec"), resource, "spec")
    _refuse_unknown(spec, _POD_MONITOR_FIELDS, resource, "spec")
    if "selector" not in spec:
        raise UnsupportedManifest(resource, "spec.selector", "is required")
    selects_pod = label_selector(spec.get("selector"), resource, "spec.selector")
    in_namespace = namespace_selector(spec.get("namespaceSelector"), resource.namespace, resource)
    job_label = _optional_string(spec.get("jobLabel"), resource, "spec.jobLabel")
    pod_target_labels = _strings(spec.get("podTargetLabels"), resource, "spec.podTargetLabels")
    endpoints = list_at(spec.get("podMetricsEndpoints"), resource, "spec.podMetricsEndpoints")
    if not endpoints:
        raise UnsupportedManifest(
            resource, "spec.podMetricsEndpoints", "names no endpoint to scrape"
        )

    selected_pods = sorted(
        (
            pod
            for pod in pods
            if pod.ip and in_namespace(pod.namespace) and selects_pod(pod.label_map)
        ),
        key=lambda pod: (pod.namespace, pod.name),
    )
    jobs: list[dict[str, Any]] = []
    for index, raw_endpoint in enumerate(endpoints):
        where = f"spec.podMetricsEndpoints[{index}]"
        entry = mapping_at(raw_endpoint, resource, where)
        _refuse_unknown(entry, _POD_ENDPOINT_FIELDS, resource, where)
        settings = _endpoint_settings(entry, resource, where)
        port_name = _optional_string(entry.get("port"), resource, f"{where}.port")
        port_number = _port(entry.get("portNumber"), resource, f"{where}.portNumber")
        target_port = _int_or_string(entry.get("targetPort"), resource, f"{where}.targetPort")
        # The operator's precedence: `port`, then `portNumber`, then the deprecated `targetPort`.
        if port_name is not None:
            port_number = target_port = None
        elif port_number is not None:
            target_port = None
        endpoint_label = port_name if port_name is not None else _text(target_port)

        groups: list[dict[str, Any]] = []
        for pod in selected_pods:
            for port in pod.ports:
                if port_name is not None and port.name != port_name:
                    continue
                if port_number is not None and port.number != port_number:
                    continue
                if target_port is not None and not _container_port_matches(
                    (port,), port.number, target_port
                ):
                    continue
                address = f"{pod.ip}:{port.number}"
                labels = {"namespace": pod.namespace, "pod": pod.name}
                labels.update(_copied_labels(pod_target_labels, pod.label_map))
                labels["job"] = (job_label and pod.label_map.get(job_label)) or (
                    f"{resource.namespace}/{resource.name}"
                )
                if endpoint_label is not None:
                    labels["endpoint"] = endpoint_label
                labels["instance"] = address
                groups.append({"targets": [address], "labels": labels})
        jobs.append(
            _job(
                f"podMonitor/{resource.namespace}/{resource.name}/{index}",
                settings,
                groups,
                interval_override,
            )
        )
    return jobs


def _endpoint_settings(entry: Mapping[str, Any], resource: object, where: str) -> _Endpoint:
    path = _optional_string(entry.get("path"), resource, f"{where}.path") or DEFAULT_METRICS_PATH
    if not path.startswith("/"):
        raise UnsupportedManifest(resource, f"{where}.path", f"{path!r} does not start with /")
    scheme = _optional_string(entry.get("scheme"), resource, f"{where}.scheme")
    if scheme is not None:
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise UnsupportedManifest(
                resource, f"{where}.scheme", f"{scheme!r} is not http or https"
            )
    interval = _duration(entry.get("interval"), resource, f"{where}.interval")
    scrape_timeout = _duration(entry.get("scrapeTimeout"), resource, f"{where}.scrapeTimeout")
    interval_ms = parse_duration_milliseconds(interval or DEFAULT_SCRAPE_INTERVAL)
    if scrape_timeout is not None and (parse_duration_milliseconds(scrape_timeout) or 0) > (
        interval_ms or 0
    ):
        raise UnsupportedManifest(
            resource,
            f"{where}.scrapeTimeout",
            f"{scrape_timeout} is longer than the scrape interval "
            f"{interval or DEFAULT_SCRAPE_INTERVAL}; Prometheus refuses that",
        )
    params: dict[str, list[str]] | None = None
    if entry.get("params") is not None:
        params = {}
        for name, values in mapping_at(entry.get("params"), resource, f"{where}.params").items():
            params[str(name)] = list(_strings(values, resource, f"{where}.params.{name}"))
    if not _boolean(entry.get("filterRunning"), resource, f"{where}.filterRunning", default=True):
        raise UnsupportedManifest(
            resource,
            f"{where}.filterRunning",
            "false is not supported by the local run: it knows only running pods",
        )
    honor_timestamps = entry.get("honorTimestamps")
    return _Endpoint(
        path=path,
        scheme=scheme,
        interval=interval,
        scrape_timeout=scrape_timeout,
        params=params,
        honor_labels=_boolean(
            entry.get("honorLabels"), resource, f"{where}.honorLabels", default=False
        ),
        honor_timestamps=None
        if honor_timestamps is None
        else _boolean(honor_timestamps, resource, f"{where}.honorTimestamps", default=True),
    )


def _job(
    name: str,
    settings: _Endpoint,
    groups: list[dict[str, Any]],
    interval_override: str | None,
) -> dict[str, Any]:
    job: dict[str, Any] = {"job_name": name, "honor_labels": settings.honor_labels}
    if settings.honor_timestamps is not None:
        job["honor_timestamps"] = settings.honor_timestamps
    interval = interval_override or settings.interval
    if interval is not None:
        job["scrape_interval"] = interval
    timeout = settings.scrape_timeout
    if timeout is not None and interval_override is not None:
        timeout_ms = parse_duration_milliseconds(timeout) or 0
        if timeout_ms > (parse_duration_milliseconds(interval_override) or 0):
            timeout = interval_override
    if timeout is not None:
        job["scrape_timeout"] = timeout
    job["metrics_path"] = settings.path
    if settings.scheme is not None:
        job["scheme"] = settings.scheme
    if settings.params is not None:
        job["params"] = settings.params
    job["static_configs"] = groups
    return job


def _copied_labels(names: Iterable[str], labels: Mapping[str, str]) -> dict[str, str]:
    """`targetLabels` / `podTargetLabels`: labels of the Service or pod copied onto the target."""
    return {sanitize_label_name(name): labels[name] for name in names if labels.get(name)}


# -- rule files ---------------------------------------------------------------------------------


def rule_files(prometheus_rules: Sequence[dict[str, Any]]) -> dict[str, str]:
    """One rule file per PrometheusRule, `<namespace>-<name>.yaml` -> its text.

    The text is what the operator writes: the rule's `groups`, without the Thanos-only
    `partial_response_strategy` and without empty `interval`/`for` values. Whether Prometheus
    accepts the rules is for `promtool` to say (`prometheus.check_rules`).
    """
    files: dict[str, str] = {}
    for body in sorted(prometheus_rules, key=_namespaced_name):
        resource = _reference(body, "PrometheusRule")
        spec = mapping_at(body.get("spec"), resource, "spec")
        _refuse_unknown(spec, frozenset({"groups"}), resource, "spec")
        groups: list[dict[str, Any]] = []
        for index, raw_group in enumerate(list_at(spec.get("groups"), resource, "spec.groups")):
            where = f"spec.groups[{index}]"
            group = dict(mapping_at(raw_group, resource, where))
            _refuse_unknown(group, _RULE_GROUP_FIELDS, resource, where)
            group.pop("partial_response_strategy", None)
            if group.get("interval") == "":
                del group["interval"]
            rules: list[dict[str, Any]] = []
            for rule_index, raw_rule in enumerate(
                list_at(group.get("rules"), resource, f"{where}.rules")
            ):
                rule = dict(mapping_at(raw_rule, resource, f"{where}.rules[{rule_index}]"))
                if rule.get("for") == "":
                    del rule["for"]
                rules.append(rule)
            group["rules"] = rules
            groups.append(group)
        name = f"{resource.namespace}-{resource.name}.yaml"
        if name in files:
            raise UnsupportedManifest(
                resource, "metadata.name", "two PrometheusRules have this namespace and name"
            )
        files[name] = yaml.safe_dump(
            {"groups": groups}, sort_keys=False, default_flow_style=False, width=1000
        )
    return files


def rule_file_origins(prometheus_rules: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Rule file name -> the PrometheusRule it comes from (`PrometheusRule/ns/name`), for
    messages that must name the manifest rather than the generated file."""
    origins: dict[str, str] = {}
    for body in prometheus_rules:
        resource = _reference(body, "PrometheusRule")
        origins[f"{resource.namespace}-{resource.name}.yaml"] = str(resource)
    return origins


# -- the configuration file ---------------------------------------------------------------------


def prometheus_yaml(
    scrape_configs: list[dict[str, Any]],
    rule_file_paths: Sequence[str],
    evaluation_interval: str = DEFAULT_EVALUATION_INTERVAL,
    extra_scrape_configs: Sequence[dict[str, Any]] = (),
) -> str:
    """Prometheus' configuration file: the operator's global defaults, the rule files, and the
    monitors' jobs followed by `extra_scrape_configs` (jobs the run adds itself, such as a
    stand-in for kube-state-metrics)."""
    if not parse_duration_milliseconds(evaluation_interval):
        raise LocalRunError(
            f"evaluation interval {evaluation_interval!r} is not a positive Prometheus duration"
        )
    names = [job.get("job_name") for job in [*scrape_configs, *extra_scrape_configs]]
    duplicates = sorted({str(name) for name in names if names.count(name) > 1})
    if duplicates:
        raise LocalRunError(f"scrape jobs named twice: {', '.join(duplicates)}")
    document = {
        "global": {
            "scrape_interval": DEFAULT_SCRAPE_INTERVAL,
            "scrape_timeout": DEFAULT_SCRAPE_TIMEOUT,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": list(rule_file_paths),
        "scrape_configs": [*scrape_configs, *extra_scrape_configs],
    }
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=1000)


# -- small readers ------------------------------------------------------------------------------


def _metadata(body: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = body.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _reference(body: Mapping[str, Any], kind: str) -> ObjectReference:
    metadata = _metadata(body)
    name = str(metadata.get("name") or "")
    namespace = str(metadata.get("namespace") or "")
    resource = ObjectReference(str(body.get("kind") or kind), namespace, name)
    if not name:
        raise UnsupportedManifest(resource, "metadata.name", "is missing")
    if not namespace:
        raise UnsupportedManifest(
            resource, "metadata.namespace", "is missing (the rendered object has no namespace)"
        )
    return resource


def _namespaced_name(body: Mapping[str, Any]) -> tuple[str, str]:
    metadata = _metadata(body)
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _refuse_unknown(
    section: Mapping[str, Any], known: frozenset[str], resource: object, field: str
) -> None:
    for key in section:
        if key not in known:
            raise UnsupportedManifest(resource, f"{field}.{key}", "not supported by the local run")


def _string(value: Any, resource: object, field: str) -> str:
    if not isinstance(value, str):
        raise UnsupportedManifest(resource, field, f"expected a string, found {value!r}")
    return value


def _optional_string(value: Any, resource: object, field: str) -> str | None:
    return None if value is None else _string(value, resource, field)


def _strings(value: Any, resource: object, field: str) -> tuple[str, ...]:
    return tuple(
        _string(item, resource, f"{field}[{index}]")
        for index, item in enumerate(list_at(value, resource, field))
    )


def _boolean(value: Any, resource: object, field: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise UnsupportedManifest(resource, field, f"expected true or false, found {value!r}")
    return value


def _port(value: Any, resource: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise UnsupportedManifest(resource, field, f"{value!r} is not a port number")
    return value


def _int_or_string(value: Any, resource: object, field: str) -> str | int | None:
    """An IntOrString port: a number, or a container port's name."""
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    return _port(value, resource, field)


def _text(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def _duration(value: Any, resource: object, field: str) -> str | None:
    if value is None or value == "":
        return None
    text = _string(value, resource, field)
    milliseconds = parse_duration_milliseconds(text)
    if not milliseconds:
        raise UnsupportedManifest(
            resource, field, f"{text!r} is not a positive Prometheus duration (like 30s or 1m)"
        )
    return text

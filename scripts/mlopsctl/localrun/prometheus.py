"""Debian's Prometheus for the local run: checking rule files, its command line, and a client.

The run writes the files `prometheus_config` makes, checks the rules with `promtool` (what the
operator's admission webhook does with PrometheusRules on a cluster), starts `command(...)` as a
process of the `monitoring` pod, and talks to it with `PrometheusClient`: readiness, reloads
after the pods or manifests change, targets, alerts, rules and queries.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlopsctl.base.errors import LocalRunError

# Long enough to look at a run's history, short enough that a forgotten data directory stays
# small; the cluster's retention (7d, base/kube-prometheus-stack/values.yaml) is for a cluster.
RETENTION = "6h"

Health = Literal["up", "down", "unknown"]
AlertState = Literal["pending", "firing"]
_HEALTH: dict[str, Health] = {"up": "up", "down": "down"}


def check_rules(
    files: Sequence[Path],
    promtool: str = "promtool",
    origins: Mapping[str, str] | None = None,
) -> None:
    """Refuse rule files Prometheus would refuse, with promtool's message.

    `origins` maps a file's name (`ml-platform-model-server.yaml`) to what it was made from
    (`PrometheusRule/ml-platform/model-server`) so the message names the manifest to fix.
    Each file is checked on its own (about 20 ms each) so a failure is tied to its file.
    """
    problems: list[str] = []
    for path in files:
        try:
            completed = subprocess.run(
                [promtool, "check", "rules", str(path)],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
        except FileNotFoundError as error:
            raise LocalRunError(
                f"promtool not found ({promtool}): install Debian's prometheus package"
            ) from error
        except subprocess.TimeoutExpired as error:
            raise LocalRunError(f"promtool check rules {path}: no answer in 60 s") from error
        if completed.returncode == 0:
            continue
        origin = (origins or {}).get(path.name)
        where = f"{path} (from {origin})" if origin else str(path)
        problems.append(f"{where}: {_promtool_message(completed.stderr or completed.stdout)}")
    if problems:
        raise LocalRunError("Prometheus refuses the rules:\n" + "\n".join(problems))


def _promtool_message(output: str) -> str:
    # promtool prints "  FAILED:" and then the file's errors, each prefixed with the file name
    # (which the caller's message already gives), sometimes twice.
    lines: list[str] = []
    for line in output.splitlines():
        text = line.strip()
        if not text or text == "FAILED:" or text in lines:
            continue
        lines.append(text)
    return "; ".join(lines) or "promtool check rules failed without a message"


def command(
    config_file: Path,
    data_dir: Path,
    listen: str,
    binary: str = "prometheus",
    retention: str = RETENTION,
) -> list[str]:
    """Prometheus' command line: the run's configuration, its own data directory, reloads over
    HTTP (`--web.enable-lifecycle`, for `PrometheusClient.reload`), a short retention unless
    the chart's values give one."""
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address={listen}",
        "--web.enable-lifecycle",
    ]


@dataclass(frozen=True)
class Target:
    """An active scrape target as Prometheus reports it."""

    # The scrape job (`serviceMonitor/ml-platform/mlflow-tracking/0`); `labels["job"]` is the
    # job label the target's series carry (`mlflow-tracking`).
    pool: str
    labels: dict[str, str]
    health: Health
    last_error: str
    scrape_url: str

    @property
    def job(self) -> str:
        return self.labels.get("job", "")


@dataclass(frozen=True)
class Alert:
    """An alert that is pending or firing."""

    name: str
    state: AlertState
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    value: str = ""


class PrometheusClient:
    """Prometheus' HTTP API, with plain urllib. Errors (HTTP, or an API answer with
    `status: error`) raise `LocalRunError` carrying Prometheus' own message."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def ready(self) -> bool:
        """Whether Prometheus answers /-/ready (it does once its storage and rules are loaded)."""
        try:
            with urllib.request.urlopen(
                f"{self.base_url}/-/ready", timeout=self.timeout
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_until_ready(self, timeout: float = 30.0, interval: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() >= deadline:
                raise LocalRunError(f"Prometheus at {self.base_url} not ready after {timeout:g} s")
            time.sleep(interval)

    def reload(self) -> None:
        """Read the configuration and rule files again (POST /-/reload). A file Prometheus
        refuses raises with its message; Prometheus then keeps running the previous one."""
        self._request("/-/reload", method="POST")

    def targets(self) -> list[Target]:
        data = self._api("/api/v1/targets", {"state": "active"})
        targets: list[Target] = []
        for entry in _dicts(data.get("activeTargets")):
            health: Health = _HEALTH.get(str(entry.get("health")), "unknown")
            targets.append(
                Target(
                    pool=str(entry.get("scrapePool", "")),
                    labels=_string_map(entry.get("labels")),
                    health=health,
                    last_error=str(entry.get("lastError") or ""),
                    scrape_url=str(entry.get("scrapeUrl", "")),
                )
            )
        return targets

    def alerts(self) -> list[Alert]:
        """Alerts that are pending or firing (inactive ones are not listed by Prometheus)."""
        data = self._api("/api/v1/alerts")
        alerts: list[Alert] = []
        for entry in _dicts(data.get("alerts")):
            labels = _string_map(entry.get("labels"))
            raw_state = entry.get("state")
            if raw_state == "pending":
                state: AlertState = "pending"
            elif raw_state == "firing":
                state = "firing"
            else:
                continue
            alerts.append(
                Alert(
                    name=labels.get("alertname", ""),
                    state=state,
                    labels=labels,
                    annotations=_string_map(entry.get("annotations")),
                    value=str(entry.get("value", "")),
                )
            )
        return alerts

    def rules_loaded(self) -> list[str]:
        """Names of the rule groups Prometheus has loaded."""
        data = self._api("/api/v1/rules")
        return [str(group.get("name", "")) for group in _dicts(data.get("groups"))]

    def query(self, expression: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: (labels, value) per series; a scalar is one series with no labels."""
        data = self._api("/api/v1/query", {"query": expression})
        result_type = data.get("resultType")
        result = data.get("result")
        if result_type == "vector":
            return [
                (_string_map(sample.get("metric")), _sample_value(sample.get("value"), expression))
                for sample in _dicts(result)
            ]
        if result_type == "scalar":
            return [({}, _sample_value(result, expression))]
        raise LocalRunError(
            f"Prometheus at {self.base_url}: {expression!r} gives a {result_type}, "
            "not an instant vector or a scalar"
        )

    def _api(self, path: str, parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
        body = self._request(path, parameters=parameters)
        try:
            document = json.loads(body)
        except json.JSONDecodeError as error:
            raise LocalRunError(
                f"Prometheus at {self.base_url}{path}: not JSON: {body[:200]!r}"
            ) from error
        if not isinstance(document, dict):
            raise LocalRunError(
                f"Prometheus at {self.base_url}{path}: unexpected answer {body[:200]!r}"
            )
        if document.get("status") != "success":
            raise LocalRunError(
                f"Prometheus at {self.base_url}{path}: "
                f"{document.get('errorType', 'error')}: {document.get('error', body[:200])}"
            )
        data = document.get("data")
        return data if isinstance(data, dict) else {}

    def _request(
        self, path: str, parameters: Mapping[str, str] | None = None, method: str = "GET"
    ) -> str:
        url = f"{self.base_url}{path}"
        if parameters:
            url += "?" + urllib.parse.urlencode(parameters)
        request = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return str(response.read().decode("utf-8", errors="replace"))
        except urllib.error.HTTPError as error:
            message = error.read().decode("utf-8", errors="replace").strip()
            try:
                # API errors come as JSON with the message in "error"; /-/reload answers text.
                document = json.loads(message)
                if isinstance(document, dict) and document.get("error"):
                    message = str(document["error"])
            except json.JSONDecodeError:
                pass
            raise LocalRunError(
                f"Prometheus at {self.base_url}{path}: HTTP {error.code}: {message or error.reason}"
            ) from error
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise LocalRunError(f"Prometheus at {url}: cannot connect: {reason}") from error


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _string_map(value: Any) -> dict[str, str]:
    return {str(key): str(item) for key, item in value.items()} if isinstance(value, dict) else {}


def _sample_value(value: Any, expression: str) -> float:
    # Prometheus writes a sample as [unix time, "value"]; the value is a string so NaN and
    # infinities survive JSON.
    if not isinstance(value, list) or len(value) != 2:
        raise LocalRunError(f"Prometheus: unexpected sample {value!r} for {expression!r}")
    return float(value[1])

"""The local environment's monitoring manifests and small ones, for the tests of the operator's
part (`prometheus_config`) and of Prometheus itself (`prometheus`): rendered monitors, rules and
the pods they select, as the run would report them."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlopsctl.base import kustomize, resources, toolchain
from mlopsctl.localrun import workloads
from mlopsctl.localrun.model import ContainerPort, PodAddress, Service
from tests.support.paths import REPOSITORY

ROOTS = (
    "overlays/local/mlflow-tracking",
    "overlays/local/model-server",
    "overlays/local/promoter",
    "overlays/local/postgres",
)
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


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


def render(roots: tuple[str, ...] = ROOTS) -> Rendered:
    """The roots rendered by the pinned kustomize, every object parsed."""
    tools = toolchain.resolve(toolchain.default_tools_dir(REPOSITORY))
    results = kustomize.render_roots(REPOSITORY, list(roots), tools)
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


def write_rule_files(files: dict[str, str], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths

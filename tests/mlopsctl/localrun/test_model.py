"""What a workload asks for, as the run's other parts read it: objects named as kubectl names
them, ports found by name or number, the names cluster DNS gives a Service, and label selectors;
on this repository's own manifests where they have a say."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest

from mlopsctl.base import toolchain
from mlopsctl.base.config import load_config
from mlopsctl.base.kustomize import render_root
from mlopsctl.base.resources import parse_render
from mlopsctl.localrun import workloads
from mlopsctl.localrun.model import (
    Container,
    ContainerPort,
    ObjectReference,
    PodAddress,
    selects,
)
from tests.support.paths import REPOSITORY

COMPONENTS = ("postgres", "mlflow-tracking", "model-server", "promoter", "streamlit")


@pytest.fixture(scope="module")
def local_objects() -> list[dict[str, Any]]:
    tools = toolchain.resolve(toolchain.default_tools_dir(REPOSITORY))
    found = []
    for component in COMPONENTS:
        result = render_root(REPOSITORY, f"overlays/local/{component}", tools, False)
        assert result.error is None, result.error
        found += [resource.body for resource in parse_render(component, result.output)]
    return found


def test_an_object_is_named_as_kubectl_names_it():
    assert str(ObjectReference("Deployment", "ml-platform", "model-server")) == (
        "Deployment/ml-platform/model-server"
    )
    # Cluster-scoped: no empty namespace between the slashes.
    assert str(ObjectReference("Namespace", "", "ml-platform")) == "Namespace/ml-platform"


PORTS = (ContainerPort("http", 8080), ContainerPort("metrics", 9090, "TCP"))


@pytest.mark.parametrize(
    "holder",
    [
        Container("app", "image", None, None, ports=PORTS),
        PodAddress("apps", "app-0", (), "10.0.0.2", PORTS),
    ],
    ids=["container", "pod"],
)
@pytest.mark.parametrize(
    ("asked", "number"),
    [
        ("http", 8080),
        ("metrics", 9090),
        ("8080", 8080),  # a number written as a string, as an IntOrString may be
        (7000, 7000),  # a number needs no declared port, as a Service's targetPort does not
        ("grpc", None),  # a name the container does not declare: nothing to connect to
    ],
)
def test_a_port_is_found_by_name_or_number(holder: Container | PodAddress, asked, number):
    assert holder.port_number(asked) == number


def test_every_registry_url_names_a_service_as_cluster_dns_names_it(local_objects):
    """The URLs mlopsctl.yaml gives MLflow's clients use one of the names the run's hosts files
    give the tracking server's Service."""
    services = [workloads.service(body) for body in local_objects if body["kind"] == "Service"]
    names = {name: service for service in services for name in service.names}
    tracking = next(s for s in services if s.reference.name == "mlflow-tracking")
    assert tracking.names == (
        "mlflow-tracking",
        "mlflow-tracking.ml-platform",
        "mlflow-tracking.ml-platform.svc",
        "mlflow-tracking.ml-platform.svc.cluster.local",
    )
    registries = load_config(REPOSITORY).registries
    assert registries
    for registry in registries:
        host = urlparse(registry.url).hostname
        assert names.get(str(host)) is tracking, registry.url


def test_every_service_of_local_selects_the_pods_of_one_workload(local_objects):
    templates = {
        str(made.reference): made.template.label_map
        for body in local_objects
        if body["kind"] in workloads.WORKLOAD_KINDS and body["kind"] != "Job"
        for made in [workloads.workload(body)]
    }
    for body in local_objects:
        if body["kind"] != "Service":
            continue
        service = workloads.service(body)
        selected = [name for name, labels in templates.items() if selects(service.selector, labels)]
        assert len(selected) == 1, (service.reference, selected)


def test_a_selector_needs_every_pair_and_an_empty_one_selects_everything():
    labels = {"app": "web", "tier": "front"}
    assert selects({"app": "web"}, labels)
    assert selects((("app", "web"), ("tier", "front")), labels)  # as a model keeps it
    assert not selects({"app": "web", "tier": "back"}, labels)
    assert not selects({"app": "web"}, {})
    # `podSelector: {}` selects every pod of the namespace.
    assert selects({}, labels) and selects({}, {})

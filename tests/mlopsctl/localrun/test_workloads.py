"""Rendered manifests -> what the local run honours: the kubelet's string rules, and a clear
error, naming resource and field, for everything it cannot honour."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlopsctl.base import toolchain
from mlopsctl.base.config import load_config
from mlopsctl.base.errors import UnsupportedManifest
from mlopsctl.base.kustomize import render_root
from mlopsctl.base.resources import parse_render
from mlopsctl.localrun import operators, workloads
from mlopsctl.localrun.model import Container, ObjectReference, Service, ServicePort
from tests.support.paths import REPOSITORY

TOOLS = toolchain.resolve(toolchain.default_tools_dir(REPOSITORY))
COMPONENTS = ("platform", "postgres", "mlflow-tracking", "model-server", "promoter", "streamlit")


def render(repository: Path, root: str) -> list[dict[str, Any]]:
    result = render_root(repository, root, TOOLS, allow_network=False)
    assert result.error is None, result.error
    return [resource.body for resource in parse_render(root, result.output)]


@pytest.fixture(scope="module")
def local_environment() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("ml-platform", body)
        for component in COMPONENTS
        for body in render(REPOSITORY, f"overlays/local/{component}")
    ]


def deployment(environment: list[tuple[str, dict[str, Any]]], name: str) -> dict[str, Any]:
    return copy.deepcopy(
        next(
            body
            for _, body in environment
            if body["kind"] == "Deployment" and body["metadata"]["name"] == name
        )
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--uri=$(URI)", "--uri=models:/m/1"),
        ("$(UNDEFINED) stays", "$(UNDEFINED) stays"),
        ("$$(URI) is escaped", "$(URI) is escaped"),
        ("a $ alone", "a $ alone"),
        ("$(URI", "$(URI"),
        ("end$", "end$"),
        ("$(URI)$(URI)", "models:/m/1models:/m/1"),
    ],
)
def test_variables_expand_as_the_kubelet_expands_them(text: str, expected: str):
    assert workloads.expand(text, {"URI": "models:/m/1"}.get) == expected


def test_service_links_are_the_variables_the_kubelet_gives():
    service = Service(
        ObjectReference("Service", "ml-platform", "mlflow-tracking"),
        (("app", "x"),),
        (ServicePort("http", 5000, "http"),),
    )
    variables = workloads.service_environment([(service, "10.1.128.7")])
    assert variables["MLFLOW_TRACKING_SERVICE_HOST"] == "10.1.128.7"
    assert variables["MLFLOW_TRACKING_SERVICE_PORT_HTTP"] == "5000"
    assert variables["MLFLOW_TRACKING_PORT"] == "tcp://10.1.128.7:5000"
    assert variables["MLFLOW_TRACKING_PORT_5000_TCP_ADDR"] == "10.1.128.7"


def test_command_and_args_replace_entrypoint_and_cmd_by_kubernetes_rules():
    def container(command: tuple[str, ...] | None, args: tuple[str, ...] | None) -> Container:
        return Container("c", "image", command, args)

    entrypoint, cmd = ("mlflow",), ("server",)
    assert workloads.effective_command(container(None, None), entrypoint, cmd) == [
        "mlflow",
        "server",
    ]
    assert workloads.effective_command(container(None, ("db",)), entrypoint, cmd) == [
        "mlflow",
        "db",
    ]
    assert workloads.effective_command(container(("sh",), None), entrypoint, cmd) == ["sh"]
    assert workloads.effective_command(container(("sh",), ("-c",)), entrypoint, cmd) == ["sh", "-c"]


@pytest.mark.parametrize(
    ("quantity", "millis"), [("250m", 250), ("1", 1000), (0.5, 500), ("1.5", 1500)]
)
def test_cpu_quantities(quantity: Any, millis: int):
    assert workloads.cpu_millis(quantity, "x", "f") == millis


@pytest.mark.parametrize(
    ("quantity", "size"), [("512Mi", 512 * 2**20), ("1Gi", 2**30), ("1G", 10**9), (1024, 1024)]
)
def test_memory_quantities(quantity: Any, size: int):
    assert workloads.memory_bytes(quantity, "x", "f") == size


def test_every_workload_of_the_local_environment_is_understood(local_environment):
    kinds = [
        workloads.workload(body).reference.kind
        for _, body in local_environment
        if body["kind"] in workloads.WORKLOAD_KINDS
    ]
    assert sorted(kinds) == ["Deployment"] * 4 + ["Job"] * 2


def _refusal(body: dict[str, Any]) -> UnsupportedManifest:
    with pytest.raises(UnsupportedManifest) as refused:
        workloads.workload(body)
    return refused.value


def test_an_unsupported_volume_type_is_refused_naming_the_field(local_environment):
    body = deployment(local_environment, "model-server")
    body["spec"]["template"]["spec"]["volumes"][0] = {"name": "tmp", "hostPath": {"path": "/x"}}
    refusal = _refusal(body)
    assert refusal.resource == "Deployment/ml-platform/model-server"
    assert refusal.field == "spec.template.spec.volumes[0].hostPath"
    assert "not supported by the local run" in str(refusal)


def test_a_probe_on_a_port_the_container_does_not_have_is_refused(local_environment):
    body = deployment(local_environment, "streamlit")
    body["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = "web"
    refusal = _refusal(body)
    assert refusal.field == "spec.template.spec.containers[0].readinessProbe.httpGet.port"
    assert "'web' is not the name of a port of this container" in str(refusal)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda c: c.update(lifecycle={"preStop": {}}),
            "spec.template.spec.containers[0].lifecycle",
        ),
        (
            lambda c: c["securityContext"].update(privileged=True),
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
        (
            lambda c: c["resources"]["requests"].update(memory="2Gi"),
            "spec.template.spec.containers[0].resources.requests.memory",
        ),
        (
            lambda c: c["env"].append({"name": "X", "valueFrom": {"resourceFieldRef": {}}}),
            "spec.template.spec.containers[0].env[{appended}].valueFrom.resourceFieldRef",
        ),
    ],
)
def test_fields_the_run_cannot_honour_are_refused(local_environment, change, field):
    body = deployment(local_environment, "promoter")
    container = body["spec"]["template"]["spec"]["containers"][0]
    appended = len(container["env"])  # where an appended variable lands
    change(container)
    assert _refusal(body).field == field.replace("{appended}", str(appended))


def test_every_secret_and_configmap_the_local_workloads_read_is_made_by_something(
    local_environment,
):
    config = load_config(REPOSITORY)
    by_hand = {("Secret", s.namespace, s.name) for s in config.secrets_created_by_hand("local")}
    workloads.check_object_uses(
        local_environment, operators.CloudNativePG.creates, by_hand, "local"
    )


def test_a_secret_nothing_creates_is_refused_naming_the_workload_and_field(local_environment):
    config = load_config(REPOSITORY)
    by_hand = {("Secret", s.namespace, s.name) for s in config.secrets_created_by_hand("local")}
    body = deployment(local_environment, "promoter")
    from_secrets = [
        variable
        for variable in body["spec"]["template"]["spec"]["containers"][0]["env"]
        if "secretKeyRef" in variable.get("valueFrom", {})
    ]
    from_secrets[0]["valueFrom"]["secretKeyRef"]["name"] = "promoter-credentials"
    changed = [
        (ns, body if b["kind"] == "Deployment" and b["metadata"]["name"] == "promoter" else b)
        for ns, b in local_environment
    ]
    with pytest.raises(UnsupportedManifest) as refused:
        workloads.check_object_uses(changed, operators.CloudNativePG.creates, by_hand, "local")
    message = str(refused.value)
    assert message.startswith(
        "Deployment/ml-platform/promoter: spec.template.spec.containers[promoter].env["
    )
    assert "Secret 'promoter-credentials' is created by nothing in environment 'local'" in message
    # The tracking server reads postgres-app, which only CloudNativePG's operator makes.
    with pytest.raises(UnsupportedManifest, match="Secret 'postgres-app' is created by nothing"):
        workloads.check_object_uses(local_environment, lambda body: [], by_hand, "local")


def test_the_readme_tells_people_to_create_the_secrets_mlopsctl_yaml_lists():
    readme = (REPOSITORY / "README.md").read_text()
    config = load_config(REPOSITORY)
    for secret in config.secrets_created_by_hand("local"):
        command = next(
            line for line in readme.splitlines() if f"create secret generic {secret.name} " in line
        )
        assert f"-n {secret.namespace}" in command
        block = readme[readme.index(command) :].split("\n\n", 1)[0]
        for key, _recipe in secret.keys:
            assert f"--from-literal={key}=" in block, (secret.name, key)
    assert yaml.safe_load((REPOSITORY / "mlopsctl.yaml").read_text())["secretsCreatedByHand"]


def test_every_workload_of_the_environment_is_understood():
    """The pure half: every rendered workload of local parses, and its object references are
    what the run checks before it starts."""
    uses = []
    for component in ("mlflow-tracking", "model-server", "promoter", "streamlit"):
        result = render_root(REPOSITORY, f"overlays/local/{component}", TOOLS, False)
        for resource in parse_render(component, result.output):
            if resource.kind in workloads.WORKLOAD_KINDS:
                uses += workloads.object_uses(workloads.workload(resource.body).template)
    assert {
        (use.kind, use.name.rsplit("-", 1)[0] if use.kind == "ConfigMap" else use.name)
        for use in uses
    } >= {
        ("Secret", "postgres-app"),
        ("Secret", "mlflow-webhook-encryption"),
        ("Secret", "promoter"),
        ("ConfigMap", "model-server-pin"),
        ("PersistentVolumeClaim", "mlflow-artifacts"),
    }

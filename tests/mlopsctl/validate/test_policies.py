"""Each policy has a broken fixture that fails it, naming file, resource and field.

The fixtures are one small repository holding a workload that passes every check; each case
breaks one thing in it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.workload_fixture import LABELS, good_deployment, write_fixture


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def validate_json(cli, repository: Path) -> tuple[int, list[dict[str, Any]]]:
    result = cli("validate", "--repo", str(repository), "--format", "json")
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, result.json()["findings"]


def test_the_unbroken_fixture_is_clean(cli, tmp_path: Path):
    exit_code, findings = validate_json(cli, write_fixture(tmp_path, [good_deployment()]))
    assert (exit_code, findings) == (0, [])


CONTAINER = "spec.template.spec.containers[0]"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(deployment: dict[str, Any]) -> None:
        target = deployment
        *parents, last = path.split(".")
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return change


_DELETE = object()
C = "spec.template.spec.containers.0"

BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    (
        "latest-tag",
        _set(f"{C}.image", "registry.example.test/web:latest"),
        "pinned-images",
        f"{CONTAINER}.image",
    ),
    (
        "untagged",
        _set(f"{C}.image", "registry.example.test/web"),
        "pinned-images",
        f"{CONTAINER}.image",
    ),
    (
        "no-memory-limit",
        _set(f"{C}.resources.limits", {"cpu": "1"}),
        "requests-and-limits",
        f"{CONTAINER}.resources.limits.memory",
    ),
    (
        "no-requests",
        _set(f"{C}.resources.requests", _DELETE),
        "requests-and-limits",
        f"{CONTAINER}.resources.requests.cpu",
    ),
    ("no-readiness", _set(f"{C}.readinessProbe", _DELETE), "probes", f"{CONTAINER}.readinessProbe"),
    ("no-liveness", _set(f"{C}.livenessProbe", _DELETE), "probes", f"{CONTAINER}.livenessProbe"),
    (
        "root",
        _set("spec.template.spec.securityContext.runAsNonRoot", False),
        "restricted-security",
        f"{CONTAINER}.securityContext.runAsNonRoot",
    ),
    (
        "escalation",
        _set(f"{C}.securityContext.allowPrivilegeEscalation", True),
        "restricted-security",
        f"{CONTAINER}.securityContext.allowPrivilegeEscalation",
    ),
    (
        "capabilities",
        _set(f"{C}.securityContext.capabilities", {"drop": ["NET_RAW"]}),
        "restricted-security",
        f"{CONTAINER}.securityContext.capabilities.drop",
    ),
    (
        "seccomp",
        _set("spec.template.spec.securityContext.seccompProfile", _DELETE),
        "restricted-security",
        f"{CONTAINER}.securityContext.seccompProfile.type",
    ),
    (
        "writable-root",
        _set(f"{C}.securityContext.readOnlyRootFilesystem", False),
        "restricted-security",
        f"{CONTAINER}.securityContext.readOnlyRootFilesystem",
    ),
    (
        "privileged",
        _set(f"{C}.securityContext.privileged", True),
        "restricted-security",
        f"{CONTAINER}.securityContext.privileged",
    ),
    (
        "host-network",
        _set("spec.template.spec.hostNetwork", True),
        "restricted-security",
        "spec.template.spec.hostNetwork",
    ),
    (
        "no-part-of",
        _set(
            "metadata.labels",
            {"app.kubernetes.io/name": "web", "app.kubernetes.io/component": "frontend"},
        ),
        "recommended-labels",
        "metadata.labels.app.kubernetes.io/part-of",
    ),
    (
        "pod-template-label",
        _set("spec.template.metadata.labels", {"tier": "web"}),
        "recommended-labels",
        "spec.template.metadata.labels.app.kubernetes.io/name",
    ),
    ("misspelt-field", _set(f"{C}.imagePullPolicyy", "Always"), "schema", CONTAINER),
    ("wrong-type", _set("spec.replicas", "two"), "schema", "spec.replicas"),
]


@pytest.mark.parametrize(
    ("change", "check", "field"),
    [pytest.param(change, check, field, id=name) for name, change, check, field in BROKEN],
)
def test_each_broken_workload_fails_its_policy(cli, tmp_path: Path, change, check, field):
    deployment = good_deployment()
    change(deployment)
    exit_code, findings = validate_json(cli, write_fixture(tmp_path, [deployment]))
    assert exit_code == 1
    matching = [f for f in findings if f["check"] == check and f["field"] == field]
    assert matching, findings
    assert matching[0]["file"] == "web/workload.yaml"
    assert matching[0]["resource"] == "Deployment/shop/web"
    assert matching[0]["root"] == "web"


def test_writable_root_is_allowed_with_a_stated_reason(cli, tmp_path: Path):
    deployment = good_deployment()
    container_of(deployment)["securityContext"]["readOnlyRootFilesystem"] = False
    deployment["metadata"]["annotations"] = {
        "mlopsctl.io/writable-root-filesystem": "the vendor binary rewrites its own config"
    }
    exit_code, findings = validate_json(cli, write_fixture(tmp_path, [deployment]))
    assert (exit_code, findings) == (0, [])


def test_init_containers_are_checked_too(cli, tmp_path: Path):
    deployment = good_deployment()
    init = {key: value for key, value in container_of(deployment).items() if "Probe" not in key}
    init.update(name="setup", image="registry.example.test/setup")
    deployment["spec"]["template"]["spec"]["initContainers"] = [init]
    exit_code, findings = validate_json(cli, write_fixture(tmp_path, [deployment]))
    assert exit_code == 1
    assert [f["field"] for f in findings] == ["spec.template.spec.initContainers[0].image"]


def test_a_secret_with_data_fails(cli, tmp_path: Path):
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop", "labels": dict(LABELS)},
        "stringData": {"password": "hunter2"},
    }
    exit_code, findings = validate_json(cli, write_fixture(tmp_path, [good_deployment(), secret]))
    assert exit_code == 1
    assert [(f["check"], f["resource"], f["field"]) for f in findings] == [
        ("no-secret-data", "Secret/shop/db", "stringData")
    ]


def test_a_secret_generator_fails_too(cli, tmp_path: Path):
    kustomization = (
        "resources:\n  - workload.yaml\n"
        "secretGenerator:\n  - name: db\n    literals: [password=hunter2]\n"
        "labels:\n  - pairs:\n      app.kubernetes.io/name: web\n"
        "      app.kubernetes.io/component: frontend\n      app.kubernetes.io/part-of: example\n"
    )
    exit_code, findings = validate_json(
        cli, write_fixture(tmp_path, [good_deployment()], kustomization)
    )
    assert exit_code == 1
    assert [f["check"] for f in findings] == ["no-secret-data"]
    assert findings[0]["file"] == "web/kustomization.yaml"


@pytest.mark.parametrize(
    ("field", "replacement"),
    [("commonLabels", "labels"), ("bases", "resources"), ("patchesStrategicMerge", "patches")],
)
def test_deprecated_kustomize_fields_fail(cli, tmp_path: Path, field: str, replacement: str):
    value = "{tier: web}" if field == "commonLabels" else "[]"
    kustomization = f"resources:\n  - workload.yaml\n{field}: {value}\n"
    exit_code, findings = validate_json(
        cli, write_fixture(tmp_path, [good_deployment()], kustomization)
    )
    assert exit_code == 1
    deprecated = [f for f in findings if f["check"] == "kustomize-deprecated"]
    assert deprecated[0]["file"] == "web/kustomization.yaml"
    assert deprecated[0]["field"] == field
    assert repr(replacement) in deprecated[0]["message"]
    # kustomize itself warns too, and its warnings are findings as well
    if field == "commonLabels":
        assert any(f["check"] == "kustomize-warning" for f in findings)


def test_a_kind_without_schema_fails_unless_skipped(cli, tmp_path: Path):
    widget = {
        "apiVersion": "example.test/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "shop", "labels": dict(LABELS)},
        "spec": {"size": 3},
    }
    repository = write_fixture(tmp_path, [good_deployment(), widget])
    exit_code, findings = validate_json(cli, repository)
    assert exit_code == 1
    assert findings[0]["check"] == "schema"
    assert "no schema for example.test/v1 Widget" in findings[0]["message"]

    config = repository / "mlopsctl.yaml"
    config.write_text(
        config.read_text()
        + "validate:\n  skipSchemas:\n    - apiVersion: example.test/v1\n      kind: Widget\n"
        + "      reason: vendor publishes no schema\n"
    )
    result = cli("validate", "--repo", str(repository))
    assert result.exit_code == 0
    assert "schema skipped: example.test/v1 Widget: vendor publishes no schema" in result.stderr


def test_a_root_that_does_not_render_is_a_finding(cli, tmp_path: Path):
    repository = write_fixture(tmp_path, [good_deployment()], "resources:\n  - gone.yaml\n")
    exit_code, findings = validate_json(cli, repository)
    assert exit_code == 1
    assert findings[0]["check"] == "renders"
    assert findings[0]["file"] == "web/kustomization.yaml"


def test_text_output_names_file_resource_and_field(cli, tmp_path: Path):
    deployment = good_deployment()
    container_of(deployment)["image"] = "registry.example.test/web:latest"
    result = cli("validate", "--repo", str(write_fixture(tmp_path, [deployment])))
    assert result.exit_code == 1
    assert result.stdout.startswith(
        "web/workload.yaml: Deployment/shop/web: spec.template.spec.containers[0].image: "
        "image 'registry.example.test/web:latest' uses the mutable tag 'latest'"
    )
    assert "1 finding(s)" in result.stderr


@pytest.mark.parametrize("version", ["6.x", "^6.0.0", ""])
def test_a_helm_chart_range_in_a_kustomization_fails(cli, tmp_path: Path, version: str):
    repository = write_fixture(tmp_path, [good_deployment()])
    (repository / "charts").mkdir()
    (repository / "charts/kustomization.yaml").write_text(
        f"helmCharts:\n  - name: podinfo\n    repo: https://example.test/charts\n"
        f"    version: '{version}'\n"
    )
    exit_code, findings = validate_json(cli, repository)
    assert exit_code == 1
    assert [(f["check"], f["file"], f["field"]) for f in findings] == [
        ("pinned-charts", "charts/kustomization.yaml", "helmCharts[0].version")
    ]

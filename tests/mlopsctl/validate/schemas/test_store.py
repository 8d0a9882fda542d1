"""mlopsctl.validate.schemas.store: which schema checks a kind, and what it finds. Built-in kinds
against kubernetes-validate's strict schemas of the pinned Kubernetes, custom kinds against the
project's schemas (or a --schema-dir of the user's, which wins), and the real kubeconform that
`mlopsctl tools install` builds (v0.8.0), reading the same schemas offline."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mlopsctl.base import toolchain
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.resources import Resource
from mlopsctl.validate.schemas.store import (
    SchemaStore,
    kubeconform_problems,
    kubeconform_schema_dir,
)
from tests.support.paths import TOOLS_DIR
from tests.support.workload_fixture import good_deployment


def problems(store: SchemaStore, body: dict[str, Any]) -> list[tuple[str, str]] | None:
    found = store.check(Resource("web", body))
    return None if found is None else [(problem.field, problem.message) for problem in found]


def widget_schema(size_type: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"const": "example.test/v1"},
            "kind": {"const": "Widget"},
            "spec": {"type": "object", "properties": {"size": {"type": size_type}}},
        },
    }


def widget(size: Any) -> dict[str, Any]:
    return {"apiVersion": "example.test/v1", "kind": "Widget", "spec": {"size": size}}


def write_schema(directory: Path, group: str, name: str, schema: dict[str, Any]) -> Path:
    path = directory / group / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema))
    return path


# -- the in-process checker ---------------------------------------------------------------------


def test_a_built_in_kind_is_held_to_the_strict_schema_of_its_version():
    store = SchemaStore("1.35")
    deployment = good_deployment()
    assert problems(store, deployment) == []

    deployment["spec"]["replicas"] = "two"
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    found = problems(store, deployment)
    assert found is not None
    assert sorted(field for field, _message in found) == [
        "spec.replicas",
        "spec.template.spec.containers[0]",
    ]
    assert any("imagePullPolicyy" in message for _field, message in found)
    # A version Kubernetes 1.35 no longer serves has no schema: validate says so, never "valid".
    assert problems(store, {**good_deployment(), "apiVersion": "apps/v1beta1"}) is None


def test_a_custom_kind_is_checked_against_its_project_schema_with_the_useful_message():
    store = SchemaStore("1.35")
    application = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "web", "namespace": "argocd"},
        "spec": {
            "project": "platform",
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "web"},
        },
    }
    # Neither source nor sources: of the oneOf's failures, the one that says what to add.
    [(field, message)] = problems(store, application) or []
    assert field == "spec"
    assert message.endswith("is a required property") and "source" in message
    assert problems(store, widget(3)) is None  # a custom kind nobody wrote a schema for


def test_a_schema_directory_of_the_users_wins_over_the_projects(tmp_path: Path):
    lenient = {"type": "object"}
    write_schema(tmp_path, "argoproj.io", "application_v1alpha1.json", lenient)
    write_schema(tmp_path, "example.test", "widget_v1.json", widget_schema("integer"))
    store = SchemaStore("1.35", [tmp_path])
    unchecked = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "spec": {}}

    assert problems(store, unchecked) == []
    assert problems(store, widget(3)) == []
    assert problems(store, widget("three")) == [("spec.size", "'three' is not of type 'integer'")]
    # Without the project's schemas, a project kind has none.
    assert problems(SchemaStore("1.35", include_project_schemas=False), unchecked) is None


def test_a_schema_file_changed_since_it_was_read_is_read_again(tmp_path: Path):
    """Compiled validators are kept for the life of the process (the promoter validates every
    pass); a schema changed on disk must not be answered from that memory."""
    path = write_schema(tmp_path, "example.test", "widget_v1.json", widget_schema("integer"))
    assert problems(SchemaStore("1.35", [tmp_path]), widget("three")) != []

    path.write_text(json.dumps(widget_schema("string")))
    modified = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(modified, modified))

    assert problems(SchemaStore("1.35", [tmp_path]), widget("three")) == []


def test_the_scope_is_what_the_project_schema_declares(tmp_path: Path):
    write_schema(tmp_path, "example.test", "widget_v1.json", widget_schema("integer"))
    store = SchemaStore("1.35", [tmp_path])
    assert store.is_cluster_scoped("external-secrets.io/v1", "ClusterSecretStore") is True
    assert store.is_cluster_scoped("external-secrets.io/v1", "ExternalSecret") is False
    assert store.is_cluster_scoped("example.test/v1", "Widget") is None  # it does not say
    assert store.is_cluster_scoped("example.test/v1", "Gadget") is None  # no schema


def test_a_kubernetes_version_without_schemas_is_a_clear_error():
    with pytest.raises(MlopsctlError, match="kubernetes-validate has no strict schemas for "):
        SchemaStore("1.99").check(Resource("web", good_deployment()))


# -- kubeconform --------------------------------------------------------------------------------


def test_the_schemas_are_read_offline_from_a_directory_made_once(tmp_path: Path):
    root = kubeconform_schema_dir("1.35", tmp_path)
    directory = root / "v1.35.0-standalone-strict"
    assert (directory / "deployment-apps-v1.json").is_file()
    text = (directory / "deployment-apps-v1.json").read_text()
    assert "/api/_definitions.json" not in text  # standalone: every reference is inside the file
    assert kubeconform_schema_dir("1.35", tmp_path) == root  # not rebuilt


def test_each_roots_problems_stay_with_that_root(tmp_path: Path):
    kubeconform = toolchain.resolve(TOOLS_DIR).kubeconform
    assert kubeconform is not None
    good = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n"
    bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: 1\n"
    found = kubeconform_problems(kubeconform, "1.35", {"overlays/a": good, "overlays/b": bad})
    assert list(found) == [("overlays/b", "ConfigMap", "settings")]
    [problem] = found[("overlays/b", "ConfigMap", "settings")]
    assert problem.field == "data.a"


def test_a_kubeconform_that_gives_no_report_is_a_clear_error():
    good = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n"
    with pytest.raises(MlopsctlError, match=r"kubeconform gave no JSON report \(exit code 1\)"):
        kubeconform_problems("false", "1.35", {"overlays/a": good})

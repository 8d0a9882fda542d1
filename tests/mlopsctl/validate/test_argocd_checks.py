"""Argo CD checks, each proven on a copy of the real tree with one thing broken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPOSITORY
from tests.support.trees import drop_application, edit_yaml, patch_applications


def findings_of(cli, repository: Path, check: str) -> list[dict[str, Any]]:
    result = cli("validate", "--repo", str(repository), "--format", "json")
    assert result.exit_code == 1, result.stdout
    return [finding for finding in result.json()["findings"] if finding["check"] == check]


@pytest.mark.slow
def test_the_repository_validates_clean(cli):
    result = cli("validate", "--repo", str(REPOSITORY), "--format", "json")
    report = result.json()
    assert result.exit_code == 0, report["findings"]
    assert report["findings"] == []
    assert report["resources_checked"] > 100
    assert report["skipped_schemas"] == []
    assert sorted(report["needs_network"]) == [
        "clusters/local/argocd",
        "clusters/production/argocd",
        "clusters/staging/argocd",
    ]


def test_a_project_that_refuses_the_destination(cli, platform_copy: Path):
    def narrow(documents: list[dict[str, Any]]) -> None:
        platform = next(d for d in documents if d["metadata"]["name"] == "platform")
        platform["spec"]["destinations"] = [
            {"server": "https://kubernetes.default.svc", "namespace": "monitoring"}
        ]

    edit_yaml(platform_copy / "base/argocd-bootstrap/appprojects.yaml", narrow)
    found = findings_of(cli, platform_copy, "argocd-project")
    refused = {f["resource"] for f in found if f["field"] == "spec.destination"}
    assert "Application/argocd/postgres-staging" in refused
    assert found[0]["file"].startswith("base/argocd-apps/")


def test_a_project_that_refuses_the_source_repository(cli, platform_copy: Path):
    def narrow(documents: list[dict[str, Any]]) -> None:
        operators = next(d for d in documents if d["metadata"]["name"] == "operators")
        operators["spec"]["sourceRepos"].remove("https://charts.external-secrets.io")

    edit_yaml(platform_copy / "base/argocd-bootstrap/appprojects.yaml", narrow)
    found = findings_of(cli, platform_copy, "argocd-project")
    assert {(f["resource"], f["field"]) for f in found} == {
        (f"Application/argocd/external-secrets-{env}", "spec.sources[0].repoURL")
        for env in ("local", "staging", "production")
    }
    # Written once for every environment: the finding names the shared file.
    assert {f["file"] for f in found} == {"base/argocd-apps/external-secrets.yaml"}


def test_a_cluster_scoped_kind_the_project_does_not_list(cli, platform_copy: Path):
    def narrow(documents: list[dict[str, Any]]) -> None:
        platform = next(d for d in documents if d["metadata"]["name"] == "platform")
        platform["spec"]["clusterResourceWhitelist"] = [{"group": "", "kind": "Namespace"}]

    edit_yaml(platform_copy / "base/argocd-bootstrap/appprojects.yaml", narrow)
    found = findings_of(cli, platform_copy, "argocd-project")
    messages = {f["resource"]: f["message"] for f in found}
    assert (
        "ClusterSecretStore/gcp-secret-manager from overlays/staging/platform is refused"
        in (messages["Application/argocd/platform-staging"])
    )
    assert "clusterResourceWhitelist" in messages["Application/argocd/platform-staging"]
    assert "Application/argocd/platform-local" not in messages  # local has no secret store


def test_a_namespaced_kind_the_project_does_not_list(cli, platform_copy: Path):
    def narrow(documents: list[dict[str, Any]]) -> None:
        platform = next(d for d in documents if d["metadata"]["name"] == "platform")
        platform["spec"]["namespaceResourceWhitelist"] = [
            entry
            for entry in platform["spec"]["namespaceResourceWhitelist"]
            if entry["kind"] != "PodDisruptionBudget"
        ]

    edit_yaml(platform_copy / "base/argocd-bootstrap/appprojects.yaml", narrow)
    found = findings_of(cli, platform_copy, "argocd-project")
    assert {f["resource"] for f in found} == {
        f"Application/argocd/{component}-production"
        for component in ("mlflow-tracking", "model-server", "streamlit", "promoter")
    }


def test_an_application_path_that_does_not_exist(cli, platform_copy: Path):
    def repoint(documents: list[dict[str, Any]]) -> None:
        documents[0]["spec"]["source"]["path"] = "overlays/ENVIRONMENT/model-servr"

    edit_yaml(platform_copy / "base/argocd-apps/model-server.yaml", repoint)
    found = findings_of(cli, platform_copy, "argocd-path")
    assert [(f["file"], f["resource"], f["field"]) for f in found] == [
        (
            "base/argocd-apps/model-server.yaml",
            f"Application/argocd/model-server-{environment}",
            "spec.source.path",
        )
        for environment in ("local", "production", "staging")
    ]
    assert "'overlays/local/model-servr' does not exist" in found[0]["message"]


def test_an_application_path_that_does_not_render(cli, platform_copy: Path):
    (platform_copy / "overlays/production/streamlit/kustomization.yaml").write_text(
        "resources:\n  - ../../../base/streamlit\n  - missing.yaml\n"
    )
    found = findings_of(cli, platform_copy, "argocd-path")
    assert [f["resource"] for f in found] == ["Application/argocd/streamlit-production"]
    assert "does not render" in found[0]["message"]


def test_a_values_file_that_does_not_exist(cli, platform_copy: Path):
    (platform_copy / "overlays/staging/kube-prometheus-stack/values.yaml").unlink()
    found = findings_of(cli, platform_copy, "argocd-path")
    assert [(f["resource"], f["field"]) for f in found] == [
        ("Application/argocd/kube-prometheus-stack-staging", "spec.sources[0].helm.valueFiles[2]")
    ]


@pytest.mark.parametrize("version", ["0.27.*", ">=0.27.0", "~0.27", "", "0.27"])
def test_a_chart_version_range_fails(cli, platform_copy: Path, version: str):
    def loosen(documents: list[dict[str, Any]]) -> None:
        documents[0]["spec"]["sources"][0]["targetRevision"] = version

    edit_yaml(platform_copy / "base/argocd-apps/cloudnative-pg.yaml", loosen)
    found = findings_of(cli, platform_copy, "pinned-charts")
    assert [(f["file"], f["resource"], f["field"]) for f in found] == [
        (
            "base/argocd-apps/cloudnative-pg.yaml",
            f"Application/argocd/cloudnative-pg-{environment}",
            "spec.sources[0].targetRevision",
        )
        for environment in ("local", "production", "staging")
    ]


def test_a_component_missing_from_one_environment(cli, platform_copy: Path):
    drop_application(platform_copy, "staging", "streamlit")
    found = findings_of(cli, platform_copy, "environments-match")
    assert [(f["file"], f["message"]) for f in found] == [
        (
            "apps/staging",
            "component 'streamlit' is deployed in local, production but not in staging",
        )
    ]


def test_a_sync_wave_that_differs_between_environments(cli, platform_copy: Path):
    patch_applications(
        platform_copy,
        "production",
        {
            "target": {"kind": "Application", "name": "postgres"},
            "patch": "- op: replace\n"
            "  path: /metadata/annotations/argocd.argoproj.io~1sync-wave\n"
            '  value: "5"\n',
        },
    )
    found = findings_of(cli, platform_copy, "environments-match")
    assert {f["resource"] for f in found} == {
        f"Application/argocd/postgres-{env}" for env in ("local", "staging", "production")
    }
    assert "local=-1, production=5, staging=-1" in found[0]["message"]


def test_a_misspelt_application_field_fails_the_project_schema(cli, platform_copy: Path):
    def misspell(documents: list[dict[str, Any]]) -> None:
        policy = documents[0]["spec"]["syncPolicy"]
        policy["automated"]["selfheal"] = policy["automated"].pop("selfHeal")

    edit_yaml(platform_copy / "base/argocd-bootstrap/root-application.yaml", misspell)
    found = findings_of(cli, platform_copy, "schema")
    assert {(f["file"], f["field"]) for f in found} == {
        ("base/argocd-bootstrap/root-application.yaml", "spec.syncPolicy.automated")
    }
    assert "'selfheal' was unexpected" in found[0]["message"]


def test_a_misspelt_cloudnativepg_field_fails(cli, platform_copy: Path):
    def misspell(documents: list[dict[str, Any]]) -> None:
        documents[0]["spec"]["instance"] = documents[0]["spec"].pop("instances")

    edit_yaml(platform_copy / "base/postgres/cluster.yaml", misspell)
    found = findings_of(cli, platform_copy, "schema")
    assert {f["resource"] for f in found} == {"Cluster/ml-platform/postgres"}
    assert any("'instances' is a required property" in f["message"] for f in found)

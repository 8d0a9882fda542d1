"""One writer per pin, proven on copies of the real tree with one binding broken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlopsctl.base.config import Registry, load_config
from mlopsctl.base.resources import Resource
from mlopsctl.validate.findings import RootState
from mlopsctl.validate.topology import (
    CHECK,
    canonical_url,
    check_topology,
    clusters_of_roots,
    talks_to,
)
from tests.support.paths import REPOSITORY
from tests.support.trees import drop_application, edit_yaml

PROMOTER = "Deployment/ml-platform/promoter"
MODEL_SERVER = "Deployment/ml-platform/model-server"
IN_CLUSTER_MLFLOW = "http://mlflow-tracking.ml-platform.svc.cluster.local:5000"


def topology_findings(cli, repository: Path) -> list[dict[str, Any]]:
    result = cli("validate", "--repo", str(repository), "--format", "json")
    found = [f for f in result.json()["findings"] if f["check"] == CHECK]
    assert result.exit_code == 1 if found else result.exit_code in (0, 1), result.stdout
    return found


def own(repository: Path, environment: str, environments: str) -> None:
    """Set MLOPSCTL_ENVIRONMENTS of `environment`'s promoter."""
    patch = repository / f"overlays/{environment}/promoter/deployment-patch.yaml"
    text = patch.read_text()
    assert f"value: {environment}\n" in text
    patch.write_text(text.replace(f"value: {environment}\n", f'value: "{environments}"\n'))


def edit_config(repository: Path, old: str, new: str) -> None:
    path = repository / "mlopsctl.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_the_repository_has_one_writer_per_pin(cli):
    result = cli("validate", "--repo", str(REPOSITORY), "--format", "json")
    assert (result.exit_code, result.json()["findings"]) == (0, [])


def test_every_promoter_owns_its_own_environment_and_follows_its_own_cluster(cli):
    """The topology the repository ships: a registry per cluster, each promoter its writer."""
    config = load_config(REPOSITORY)
    for environment in config.environments:
        registry = config.registry(config.promotion.registry_of(environment) or "")
        assert registry is not None and registry.cluster == environment
        assert canonical_url(registry.url) == canonical_url(IN_CLUSTER_MLFLOW)
        patch = REPOSITORY / f"overlays/{environment}/promoter/deployment-patch.yaml"
        assert f"name: MLOPSCTL_ENVIRONMENTS\n              value: {environment}\n" in (
            patch.read_text()
        )


def test_two_promoters_owning_one_environment_are_refused(cli, platform_copy: Path):
    own(platform_copy, "production", "production,staging")
    found = topology_findings(cli, platform_copy)
    twice = [f for f in found if "owns too" in f["message"]]
    assert {f["root"] for f in twice} == {
        "overlays/staging/promoter",
        "overlays/production/promoter",
    }
    for finding in twice:
        assert finding["file"] == "base/promoter/deployment.yaml"
        assert finding["resource"] == PROMOTER
        assert finding["field"] == "spec.template.spec.containers[0].env[0]"
        assert finding["message"].startswith("MLOPSCTL_ENVIRONMENTS names staging")
    staging_side = next(f for f in twice if f["root"] == "overlays/staging/promoter")
    assert "in cluster production (overlays/production/promoter)" in staging_side["message"]


def test_a_promoter_owning_an_environment_of_another_clusters_registry_is_refused(
    cli, platform_copy: Path
):
    own(platform_copy, "staging", "production")
    own(platform_copy, "production", "staging")
    found = topology_findings(cli, platform_copy)
    assert {f["root"] for f in found} == {
        "overlays/staging/promoter",
        "overlays/production/promoter",
    }
    staging = next(f for f in found if f["root"] == "overlays/staging/promoter")
    assert staging["file"] == "base/promoter/deployment.yaml"
    assert staging["resource"] == PROMOTER
    assert staging["field"].startswith("spec.template.spec.containers[0].env[")
    assert staging["message"] == (
        "owns production, which follows registry 'production' "
        f"({IN_CLUSTER_MLFLOW}, in cluster production), but reads {IN_CLUSTER_MLFLOW} from "
        "cluster staging, which is registry 'staging' "
        f"({IN_CLUSTER_MLFLOW}, in cluster staging): it would write versions of another registry "
        "into the pins"
    )


def test_a_model_server_reading_another_registry_is_refused(cli, platform_copy: Path):
    edit_config(
        platform_copy,
        "registries:\n",
        "registries:\n  shared:\n    url: https://mlflow.example.com\n",
    )

    def point_elsewhere(documents: list[dict[str, Any]]) -> None:
        documents[0]["patches"] = [
            {
                "target": {"kind": "Deployment", "name": "model-server"},
                "patch": "- op: replace\n"
                "  path: /spec/template/spec/containers/0/env/1/value\n"
                "  value: https://mlflow.example.com/\n",
            }
        ]

    edit_yaml(platform_copy / "overlays/staging/model-server/kustomization.yaml", point_elsewhere)
    found = topology_findings(cli, platform_copy)
    assert [(f["file"], f["resource"], f["field"], f["root"]) for f in found] == [
        (
            "base/model-server/deployment.yaml",
            MODEL_SERVER,
            "spec.template.spec.containers[0].env[1]",
            "overlays/staging/model-server",
        )
    ]
    assert found[0]["message"].startswith(
        "reads https://mlflow.example.com/ from cluster staging, which is registry 'shared' "
        "(https://mlflow.example.com, outside the clusters), but staging's pins follow "
        f"registry 'staging' ({IN_CLUSTER_MLFLOW}, in cluster staging)"
    )


def test_an_environment_naming_an_unknown_registry_stops_validate(cli, platform_copy: Path):
    edit_config(platform_copy, "      registry: staging\n", "      registry: qa\n")
    result = cli("validate", "--repo", str(platform_copy))
    assert result.exit_code == 2
    assert str(platform_copy / "mlopsctl.yaml") in result.stderr
    assert "promotion.environments.staging.registry: 'qa' is not one of the registries" in (
        result.stderr
    )


def test_a_promoter_naming_an_unknown_environment_is_refused(cli, platform_copy: Path):
    own(platform_copy, "staging", "staging, qa")
    found = topology_findings(cli, platform_copy)
    assert [(f["file"], f["resource"], f["field"], f["root"]) for f in found] == [
        (
            "base/promoter/deployment.yaml",
            PROMOTER,
            "spec.template.spec.containers[0].env[0]",
            "overlays/staging/promoter",
        )
    ]
    assert found[0]["message"] == (
        "MLOPSCTL_ENVIRONMENTS names 'qa', not one of the environments "
        "['local', 'staging', 'production'] in mlopsctl.yaml"
    )


def test_an_environment_no_promoter_owns_is_refused(cli, platform_copy: Path):
    own(platform_copy, "staging", "")
    found = topology_findings(cli, platform_copy)
    assert {(f["file"], f["resource"], f["field"]) for f in found} == {
        ("base/promoter/deployment.yaml", PROMOTER, "spec.template.spec.containers[0].env[0]"),
        ("mlopsctl.yaml", "", "promotion.environments.staging"),
    }
    unowned = next(f for f in found if f["file"] == "mlopsctl.yaml")
    assert unowned["message"].startswith("no promoter owns staging, so nothing writes its pins")


def test_an_environment_the_cli_writes_needs_no_promoter_and_refuses_one(cli, platform_copy: Path):
    edit_config(
        platform_copy, "      registry: staging\n", "      registry: staging\n      writer: cli\n"
    )
    found = topology_findings(cli, platform_copy)
    assert [(f["field"], f["root"]) for f in found] == [
        ("spec.template.spec.containers[0].env[0]", "overlays/staging/promoter")
    ]
    assert "(promotion.environments.staging.writer: cli): two writers" in found[0]["message"]

    # Without staging's promoter, `mlopsctl promote --env staging` is its one writer.
    drop_application(platform_copy, "staging", "promoter")
    assert topology_findings(cli, platform_copy) == []


def test_a_registry_no_service_in_its_cluster_answers_is_refused(cli, platform_copy: Path):
    edit_config(
        platform_copy,
        "    cluster: staging\n    url: http://mlflow-tracking.ml-platform.svc.cluster.local:5000\n",
        "    cluster: staging\n    url: http://mlflow.ml-platform.svc.cluster.local:5000\n",
    )
    found = topology_findings(cli, platform_copy)
    registry = [f for f in found if f["file"] == "mlopsctl.yaml"]
    assert [(f["field"], f["message"]) for f in registry] == [
        (
            "registries.staging.url",
            "http://mlflow.ml-platform.svc.cluster.local:5000: no Service with that name and "
            "port is deployed to cluster staging",
        )
    ]
    # Every MLflow client of staging now reads another registry than staging follows.
    assert {(f["resource"], f["root"]) for f in found if f["file"] != "mlopsctl.yaml"} == {
        (PROMOTER, "overlays/staging/promoter"),
        ("Job/ml-platform/promoter-register-webhook", "overlays/staging/promoter"),
        (MODEL_SERVER, "overlays/staging/model-server"),
    }


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            ("    cluster: staging\n", "    cluster: qa\n"),
            "registries.staging.cluster",
            "no cluster 'qa' here (clusters/qa)",
        ),
        (
            ("    cluster: staging\n", ""),
            "registries.staging.url",
            "is a cluster-internal name, which reaches another MLflow in every cluster",
        ),
    ],
)
def test_a_registry_in_no_known_cluster_is_refused(
    cli, platform_copy: Path, change: tuple[str, str], field: str, message: str
):
    edit_config(platform_copy, *change)
    found = [f for f in topology_findings(cli, platform_copy) if f["file"] == "mlopsctl.yaml"]
    assert [f["field"] for f in found] == [field]
    assert message in found[0]["message"]


def test_a_promoters_flags_win_over_its_environment(cli, platform_copy: Path):
    """`serve --environments` and `--mlflow-uri` override the variables, as serve reads them."""

    def flags(documents: list[dict[str, Any]]) -> None:
        container = documents[0]["spec"]["template"]["spec"]["containers"][0]
        container["args"] = [
            "serve",
            "--environments",
            "local",
            "--mlflow-uri=http://elsewhere:5000",
        ]

    edit_yaml(platform_copy / "overlays/staging/promoter/deployment-patch.yaml", flags)
    found = topology_findings(cli, platform_copy)
    fields = {(f["file"], f["field"]) for f in found}
    assert ("base/promoter/deployment.yaml", "spec.template.spec.containers[0].args") in fields
    assert ("mlopsctl.yaml", "promotion.environments.staging") in fields
    assert any(
        "MLOPSCTL_ENVIRONMENTS names local" in f["message"] and "owns too" in f["message"]
        for f in found
    )


def test_clusters_follow_argo_cd_from_each_cluster_directory():
    def application(name: str, path: str, server: str = "https://kubernetes.default.svc"):
        return {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name},
            "spec": {
                "source": {"repoURL": "https://example.test/platform.git", "path": path},
                "destination": {"server": server},
            },
        }

    roots = {
        "clusters/hub": RootState(
            None, (Resource("clusters/hub", application("root", "apps/hub")),)
        ),
        "apps/hub": RootState(
            None,
            (
                Resource("apps/hub", application("promoter", "overlays/hub/promoter")),
                Resource(
                    "apps/hub", application("remote", "overlays/edge/model-server", "https://edge")
                ),
            ),
        ),
        "overlays/hub/promoter": RootState(None, ()),
        "base/promoter": RootState(None, ()),
    }
    assert clusters_of_roots(roots, "https://example.test/platform") == {
        "clusters/hub": frozenset({"hub"}),
        "apps/hub": frozenset({"hub"}),
        "overlays/hub/promoter": frozenset({"hub"}),
        "overlays/edge/model-server": frozenset({"https://edge"}),
    }
    # Nothing deployed through Argo CD: nothing runs, so nothing is checked.
    assert (
        list(check_topology({"base/promoter": RootState(None, ())}, load_config(REPOSITORY))) == []
    )


@pytest.mark.parametrize(
    ("client", "namespace", "cluster", "expected"),
    [
        (IN_CLUSTER_MLFLOW, "ml-platform", "staging", True),
        (IN_CLUSTER_MLFLOW + "/", "ml-platform", "staging", True),
        ("http://mlflow-tracking:5000", "ml-platform", "staging", True),
        ("http://mlflow-tracking.ml-platform.svc:5000", "ml-platform", "staging", True),
        ("http://mlflow-tracking:5000", "other", "staging", False),
        (IN_CLUSTER_MLFLOW, "ml-platform", "production", False),
        ("http://mlflow-tracking.ml-platform.svc.cluster.local", "ml-platform", "staging", False),
    ],
)
def test_a_client_talks_to_a_registry_by_its_resolved_name_in_its_cluster(
    client: str, namespace: str, cluster: str, expected: bool
):
    registry = Registry("staging", IN_CLUSTER_MLFLOW, "staging")
    assert talks_to(client, namespace, cluster, registry) is expected


def test_an_external_registry_is_the_same_from_every_cluster():
    registry = Registry("shared", "https://MLflow.example.com/", None)
    assert talks_to("https://mlflow.example.com:443", "ml-platform", "staging", registry)
    assert talks_to("https://mlflow.example.com", "ml-platform", "production", registry)
    assert not talks_to("http://mlflow.example.com", "ml-platform", "production", registry)

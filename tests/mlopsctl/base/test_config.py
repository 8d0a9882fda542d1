from pathlib import Path

import pytest

from mlopsctl.base.config import load_config
from mlopsctl.base.errors import MlopsctlError
from tests.support.paths import REPOSITORY
from tests.support.trees import MINIMAL_CONFIG


def test_the_repository_config_loads():
    config = load_config(REPOSITORY)
    assert config.environments == ("local", "staging", "production")
    assert config.kubernetes_version == "1.35"


def test_each_environment_follows_a_named_registry_and_has_one_writer(tmp_path: Path):
    (tmp_path / "mlopsctl.yaml").write_text(
        MINIMAL_CONFIG.replace("[local]", "[local, production]") + "registries:\n"
        "  here: {cluster: local, url: http://mlflow-tracking.ml-platform.svc.cluster.local:5000}\n"
        "  hosted: {url: https://mlflow.example.com}\n"
        "promotion:\n  environments:\n"
        "    local: {mode: commit, registry: here}\n"
        "    production: {mode: pull-request, registry: hosted, writer: cli}\n"
    )
    config = load_config(tmp_path)
    assert [(r.name, r.cluster, r.url) for r in config.registries] == [
        ("here", "local", "http://mlflow-tracking.ml-platform.svc.cluster.local:5000"),
        ("hosted", None, "https://mlflow.example.com"),
    ]
    assert config.promotion.registry_of("local") == "here"
    assert config.promotion.registry_of("production") == "hosted"
    assert config.registry("hosted") == config.registries[1]
    assert config.registry("elsewhere") is None
    writers = {policy.environment: policy.writer for policy in config.promotion.environments}
    assert writers == {"local": "promoter", "production": "cli"}


def test_without_registries_every_environment_follows_the_one_registry_commands_use(
    tmp_path: Path,
):
    (tmp_path / "mlopsctl.yaml").write_text(
        MINIMAL_CONFIG + "promotion:\n  environments:\n    local: {mode: commit}\n"
    )
    config = load_config(tmp_path)
    assert config.registries == ()
    assert config.promotion.registry_of("local") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("repository: [\n", "not valid YAML"),
        (MINIMAL_CONFIG.replace('"1.35"', '"latest"'), "kubernetesVersion"),
        (MINIMAL_CONFIG + "colour: blue\n", "'colour' was unexpected"),
        (MINIMAL_CONFIG.replace("[local]", "[Local]"), "environments.0"),
        (MINIMAL_CONFIG + "validate:\n  skipSchemas:\n    - kind: Foo\n", "validate.skipSchemas.0"),
        (
            MINIMAL_CONFIG + "promotion:\n  environments:\n    local: {mode: merge}\n",
            "promotion.environments.local.mode: 'merge' is not one of ['commit', 'pull-request']",
        ),
        (
            MINIMAL_CONFIG + "promotion:\n  environments:\n    local: {mode: commit}\n"
            "    qa: {mode: commit}\n",
            "promotion.environments.qa: not one of the environments",
        ),
        (
            MINIMAL_CONFIG.replace("[local]", "[local, staging]")
            + "promotion:\n  environments:\n    local: {mode: commit}\n",
            "promotion.environments: no policy for 'staging'",
        ),
        (
            MINIMAL_CONFIG + "promotion:\n  environments:\n    local:\n      mode: commit\n"
            "      gates: {minMetrics: {accuracy: high}}\n",
            "promotion.environments.local.gates.minMetrics.accuracy",
        ),
        (
            MINIMAL_CONFIG + "registries:\n  local: {url: http://mlflow:5000, region: eu}\n",
            "registries.local: Additional properties are not allowed ('region' was unexpected)",
        ),
        (
            MINIMAL_CONFIG + "registries:\n  local: {url: mlflow:5000}\n",
            "registries.local.url: 'mlflow:5000' does not match",
        ),
        (
            MINIMAL_CONFIG + "registries:\n  local: {url: http://mlflow:5000, cluster: 7}\n",
            "registries.local.cluster: 7 is not of type 'string'",
        ),
        (
            MINIMAL_CONFIG + "registries:\n  Local: {url: http://mlflow:5000}\n",
            "registries: 'Local' does not match",
        ),
        (
            MINIMAL_CONFIG + "registries:\n  local: {url: http://mlflow:5000}\n"
            "promotion:\n  environments:\n    local: {mode: commit, registry: qa}\n",
            "promotion.environments.local.registry: 'qa' is not one of the registries ['local']",
        ),
        (
            MINIMAL_CONFIG + "registries:\n  local: {url: http://mlflow:5000}\n"
            "promotion:\n  environments:\n    local: {mode: commit}\n",
            "promotion.environments.local.registry: required, one of the registries ['local']",
        ),
        (
            MINIMAL_CONFIG
            + "promotion:\n  environments:\n    local: {mode: commit, registry: qa}\n",
            "promotion.environments.local.registry: 'qa' is not one of the registries []",
        ),
        (
            MINIMAL_CONFIG
            + "promotion:\n  environments:\n    local: {mode: commit, writer: cron}\n",
            "promotion.environments.local.writer: 'cron' is not one of ['promoter', 'cli']",
        ),
    ],
)
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, expected: str):
    (tmp_path / "mlopsctl.yaml").write_text(text)
    with pytest.raises(MlopsctlError) as raised:
        load_config(tmp_path)
    assert str(tmp_path / "mlopsctl.yaml") in str(raised.value)
    assert expected in str(raised.value)


def test_environments_as_a_mapping_name_each_ones_kube_context(tmp_path: Path):
    (tmp_path / "mlopsctl.yaml").write_text(
        MINIMAL_CONFIG.replace(
            "environments: [local]",
            "environments:\n  local: {kubeContext: kind-mlops}\n  staging: {}\n",
        )
    )
    config = load_config(tmp_path)
    assert config.environments == ("local", "staging")
    assert config.kube_context("local") == "kind-mlops"
    assert config.kube_context("staging") is None

"""What the platform promises, read off the real renders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mlopsctl.base import kustomize, toolchain
from mlopsctl.base.config import load_config
from mlopsctl.base.resources import Resource, parse_render
from tests.support.paths import REPOSITORY, TOOLS_DIR

ENVIRONMENTS = ("local", "staging", "production")
STATELESS = ("mlflow-tracking", "model-server", "streamlit", "promoter")
PIN_LINE = re.compile(
    r"^(?P<indent> *)# mlopsctl: model (?P<model>[a-z0-9-]+)@(?P<alias>[a-z0-9-]+)\n"
    r"(?P=indent)- MODEL_URI=models:/(?P=model)/(?P<version>\d+)$",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Resource]]:
    roots = kustomize.discover_roots(REPOSITORY, load_config(REPOSITORY).render_exclude)
    results = kustomize.render_roots(REPOSITORY, roots, toolchain.resolve(TOOLS_DIR))
    return {result.root: parse_render(result.root, result.output) for result in results}


def one(resources: list[Resource], kind: str, name: str) -> dict[str, Any]:
    matches = [r.body for r in resources if r.kind == kind and r.name.startswith(name)]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def env_vars(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_stateless_workloads_are_highly_available_only_in_production(rendered, environment):
    for component in STATELESS:
        resources = rendered[f"overlays/{environment}/{component}"]
        deployment = one(resources, "Deployment", component)
        budgets = [r.body for r in resources if r.kind == "PodDisruptionBudget"]
        if environment == "production":
            assert deployment["spec"]["replicas"] >= 2, component
            assert len(budgets) == 1
            selector = budgets[0]["spec"]["selector"]["matchLabels"]
            pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= pod_labels.items(), component
        else:
            assert budgets == []


@pytest.mark.parametrize(
    ("environment", "alias"),
    [("local", "challenger"), ("staging", "challenger"), ("production", "champion")],
)
def test_each_environment_pins_a_concrete_version_under_its_marker(environment, alias):
    text = (REPOSITORY / f"overlays/{environment}/model-server/kustomization.yaml").read_text()
    pins = list(PIN_LINE.finditer(text))
    assert len(pins) == 1
    assert pins[0]["model"] == "iris-classifier"
    assert pins[0]["alias"] == alias
    # A fork starts with an empty registry: nothing promoted yet (MLflow numbers from 1).
    assert pins[0]["version"] == "0"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_model_server_runs_the_image_entry_point_with_serve_options(rendered, environment):
    # The image's ENTRYPOINT (serve.py) takes `mlflow models serve`'s options: the container
    # gives only those, and the pin decides between the real server and the placeholder.
    deployment = one(rendered[f"overlays/{environment}/model-server"], "Deployment", "model-server")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container
    assert container["args"] == [
        "--model-uri=$(MODEL_URI)",
        "--env-manager=local",
        "--host=0.0.0.0",
        "--port=8080",
    ]
    dockerfile = (REPOSITORY / "images/model-server/Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "/app/serve.py"]' in dockerfile


def test_changing_the_pin_rolls_the_model_server(platform_copy: Path):
    overlay = platform_copy / "overlays/staging/model-server"
    tools = toolchain.resolve(TOOLS_DIR)

    def pod_template_and_uri() -> tuple[dict[str, Any], str]:
        result = kustomize.render_root(platform_copy, "overlays/staging/model-server", tools, False)
        resources = parse_render(result.root, result.output)
        config_map = one(resources, "ConfigMap", "model-server-pin")
        return one(resources, "Deployment", "model-server")["spec"]["template"], config_map["data"][
            "MODEL_URI"
        ]

    before, uri_before = pod_template_and_uri()
    kustomization = overlay / "kustomization.yaml"
    # The first promotion: from "nothing promoted" (0) to a real version.
    kustomization.write_text(
        kustomization.read_text().replace("models:/iris-classifier/0", "models:/iris-classifier/1")
    )
    after, uri_after = pod_template_and_uri()
    assert (uri_before, uri_after) == ("models:/iris-classifier/0", "models:/iris-classifier/1")
    reference_before = env_vars({"spec": {"template": before}})["MODEL_URI"]
    reference_after = env_vars({"spec": {"template": after}})["MODEL_URI"]
    # A different ConfigMap name in the pod template is what makes Kubernetes roll the pods.
    assert reference_before != reference_after
    assert before != after


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_tracking_server_settings(rendered, environment):
    resources = rendered[f"overlays/{environment}/mlflow-tracking"]
    deployment = one(resources, "Deployment", "mlflow-tracking")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    variables = env_vars(deployment)
    hosts = variables["MLFLOW_ALLOWED_HOSTS"]["value"].split(",")
    for name in ("mlflow-tracking", "mlflow-tracking.ml-platform.svc.cluster.local"):
        assert name in hosts and f"{name}:5000" in hosts
    assert "--expose-prometheus=/tmp/prometheus" in container["args"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert variables["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "postgres-app",
        "key": "uri",  # generated by CloudNativePG
    }
    assert variables["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"]["value"] == "true"
    assert "http" in variables["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"]["value"].split(",")
    assert "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY" in variables
    migration = one(resources, "Job", "mlflow-db-upgrade")
    assert migration["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    assert migration["spec"]["template"]["spec"]["containers"][0]["command"][:3] == [
        "mlflow",
        "db",
        "upgrade",
    ]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    service_account = one(resources, "ServiceAccount", "mlflow-tracking")
    destination = variables["MLFLOW_ARTIFACTS_DESTINATION"]["value"]
    if environment == "local":
        assert destination == "/mlflow/artifacts"
        assert volumes["artifacts"] == {
            "name": "artifacts",
            "persistentVolumeClaim": {"claimName": "mlflow-artifacts"},
        }
        one(resources, "PersistentVolumeClaim", "mlflow-artifacts")
    else:
        assert destination.startswith("gs://")
        assert "artifacts" not in volumes
        annotation = service_account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        assert annotation.endswith(".iam.gserviceaccount.com")
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in variables  # no key file


def test_no_secret_data_anywhere_and_external_secrets_where_expected(rendered):
    for root, resources in rendered.items():
        assert not [r for r in resources if r.kind == "Secret"], root
    for environment in ("staging", "production"):
        names = {
            r.name
            for root in (
                f"overlays/{environment}/mlflow-tracking",
                f"overlays/{environment}/platform",
            )
            for r in rendered[root]
            if r.kind == "ExternalSecret"
        }
        assert names == {
            "mlflow-webhook-encryption",
            "mlflow-basic-auth",
            "grafana-admin",
            "alertmanager-receivers",
        }
    assert not [r for r in rendered["overlays/local/mlflow-tracking"] if r.kind == "ExternalSecret"]


def test_local_secrets_are_documented_in_the_readme():
    readme = (REPOSITORY / "README.md").read_text()
    for secret in ("mlflow-webhook-encryption", "grafana-admin", "promoter"):
        assert f"kubectl create secret generic {secret}" in readme


def test_sync_policies_per_environment(rendered):
    def policies(environment: str) -> list[dict[str, Any]]:
        return [r.body["spec"].get("syncPolicy", {}) for r in rendered[f"apps/{environment}"]]

    assert all(p["automated"] == {"prune": True, "selfHeal": True} for p in policies("local"))
    assert all(p["automated"] == {"prune": False, "selfHeal": True} for p in policies("staging"))
    assert all("automated" not in p for p in policies("production"))


def test_waves_order_operators_database_tracking_serving_frontend(rendered):
    for environment in ENVIRONMENTS:
        waves = {
            r.labels["app.kubernetes.io/name"]: int(r.annotations["argocd.argoproj.io/sync-wave"])
            for r in rendered[f"apps/{environment}"]
        }
        assert waves["cloudnative-pg"] < waves["platform"] < waves["postgres"]
        assert waves["postgres"] < waves["mlflow-tracking"] < waves["model-server"]
        assert waves["model-server"] < waves["streamlit"]
        for resource in rendered[f"apps/{environment}"]:
            assert "link.argocd.argoproj.io/mlflow-ui" in resource.annotations
            assert "link.argocd.argoproj.io/grafana" in resource.annotations


def test_argocd_is_installed_at_an_exact_version_with_the_application_health_check():
    for environment in ENVIRONMENTS:
        text = (REPOSITORY / f"clusters/{environment}/argocd/kustomization.yaml").read_text()
        assert re.search(r"argoproj/argo-cd/v\d+\.\d+\.\d+/manifests/install\.yaml", text)
    patch = (REPOSITORY / "base/argocd-settings/argocd-cm-patch.yaml").read_text()
    assert "resource.customizations.health.argoproj.io_Application: |" in patch
    assert "hs.status = obj.status.health.status" in patch


def test_ingress_only_on_staging_and_production(rendered):
    assert not [r for r in rendered["overlays/local/streamlit"] if r.kind == "Ingress"]
    for environment, host in (
        ("staging", "ml.staging.example.com"),
        ("production", "ml.example.com"),
    ):
        ingress = one(rendered[f"overlays/{environment}/streamlit"], "Ingress", "streamlit")
        assert ingress["spec"]["rules"][0]["host"] == host
        assert ingress["spec"]["tls"][0]["hosts"] == [host]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_namespace_denies_by_default(rendered, environment):
    resources = rendered[f"overlays/{environment}/platform"]
    namespace = one(resources, "Namespace", "ml-platform")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deny = one(resources, "NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for component in ("postgres", "mlflow-tracking", "model-server", "streamlit", "promoter"):
        policies = [
            r for r in rendered[f"overlays/{environment}/{component}"] if r.kind == "NetworkPolicy"
        ]
        assert policies, component


def test_the_webhook_flows_are_open_both_ways(rendered):
    for environment in ENVIRONMENTS:
        promoter = one(rendered[f"overlays/{environment}/promoter"], "NetworkPolicy", "promoter")
        [tracking] = [
            r.body
            for r in rendered[f"overlays/{environment}/mlflow-tracking"]
            if r.kind == "NetworkPolicy" and r.name == "mlflow-tracking"
        ]
        from_mlflow = promoter["spec"]["ingress"][0]
        assert from_mlflow["from"][0]["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": "mlflow-tracking"
        }
        assert from_mlflow["ports"] == [{"protocol": "TCP", "port": 8080}]
        to_promoter = [
            rule
            for rule in tracking["spec"]["egress"]
            if rule.get("to", [{}])[0].get("podSelector", {}).get("matchLabels")
            == {"app.kubernetes.io/name": "promoter"}
        ]
        assert to_promoter and to_promoter[0]["ports"] == [{"protocol": "TCP", "port": 8080}]
        registration = one(
            rendered[f"overlays/{environment}/promoter"], "Job", "promoter-register-webhook"
        )
        assert registration["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PostSync"

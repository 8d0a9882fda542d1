"""`mlopsctl validate`'s wave-order check: a first sync from nothing never waits on a later wave.

On copies of the real tree (the deadlock the platform had, and two more) and on small trees that
show what counts as reading and as making.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlopsctl.base.config import load_config
from mlopsctl.base.resources import parse_render
from mlopsctl.validate.findings import RootState
from mlopsctl.validate.wave_order import check_wave_order
from tests.support.trees import edit_yaml

ENVIRONMENTS = ("local", "staging", "production")


def findings_of(cli, repository: Path) -> list[dict[str, Any]]:
    result = cli("validate", "--repo", str(repository), "--format", "json")
    assert result.exit_code == 1, result.stdout
    return [finding for finding in result.json()["findings"] if finding["check"] == "wave-order"]


def set_wave(repository: Path, component: str, wave: int) -> None:
    def move(documents: list[dict[str, Any]]) -> None:
        documents[0]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] = str(wave)

    edit_yaml(repository / f"base/argocd-apps/{component}.yaml", move)


def test_grafana_before_the_external_secret_that_makes_its_password_deadlocks(
    cli, platform_copy: Path
):
    """The first-sync deadlock the platform had: Grafana at wave -3, its Secret made at -2."""
    set_wave(platform_copy, "kube-prometheus-stack", -3)
    found = findings_of(cli, platform_copy)
    where = {(f["file"], f["field"]) for f in found}
    assert where == {
        ("base/kube-prometheus-stack/values.yaml", "grafana.admin.existingSecret"),
        # Alertmanager's receivers (staging and production) are made by platform too.
        ("base/kube-prometheus-stack/gke.yaml", "alertmanager.alertmanagerSpec.secrets[0]"),
    }
    grafana = sorted(f["message"] for f in found if "grafana-admin" in f["message"])
    assert grafana[0].startswith(
        "Secret monitoring/grafana-admin is read by kube-prometheus-stack-production (wave -3) "
        "but made at wave -2 by ExternalSecret/monitoring/grafana-admin of platform-production"
    )
    assert "a first sync of production never finishes" in grafana[0]
    assert "kube-prometheus-stack-staging" in grafana[1]
    assert len(found) == 4  # two Secrets, in staging and production
    # Local's Secret is made by a person before anything syncs.
    assert not any("local" in f["message"] for f in found)


def test_the_tracking_server_before_the_database_that_makes_its_credentials(
    cli, platform_copy: Path
):
    set_wave(platform_copy, "postgres", 1)
    found = findings_of(cli, platform_copy)
    readers = {(f["resource"], f["field"]) for f in found}
    for environment in ENVIRONMENTS:
        assert any(
            resource == "Deployment/ml-platform/mlflow-tracking"
            and field.endswith(".valueFrom.secretKeyRef.name")
            for resource, field in readers
        )
        assert any(
            f"read by mlflow-tracking-{environment} (wave 0) but made at wave 1 by "
            f"Cluster/ml-platform/postgres of postgres-{environment}" in f["message"]
            for f in found
        )
    assert {f["file"] for f in found} >= {
        "base/mlflow-tracking/deployment.yaml",
        "base/mlflow-tracking/job-migrate.yaml",
    }


def test_a_secret_nothing_makes_names_the_list_to_add_it_to(cli, platform_copy: Path):
    config = platform_copy / "mlopsctl.yaml"
    text = config.read_text()
    entry = "    - namespace: monitoring\n      name: grafana-admin\n"
    assert entry in text
    config.write_text(text.replace(entry, "", 1))
    found = findings_of(cli, platform_copy)
    assert [f["message"] for f in found] == [
        "Secret monitoring/grafana-admin, read by kube-prometheus-stack-local (wave -2), is "
        "created by nothing in environment 'local': no manifest or operator of any wave makes "
        "it, and mlopsctl.yaml secretsCreatedByHand.local does not list it"
    ]


# -- small trees -------------------------------------------------------------------------------

REPOSITORY_URL = "https://example.test/platform.git"


def application(name: str, wave: int, source: dict[str, Any]) -> str:
    return f"""
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: {name}
  namespace: argocd
  annotations:
    argocd.argoproj.io/sync-wave: "{wave}"
spec:
  project: default
  destination:
    server: https://kubernetes.default.svc
    namespace: apps
  source: {source!r}
---"""


def problems(
    tmp_path: Path, applications: str, roots: dict[str, str], hand_made: str = ""
) -> list[tuple[str, str, str]]:
    (tmp_path / "mlopsctl.yaml").write_text(
        f"repository:\n  url: {REPOSITORY_URL}\nenvironments: [local]\n"
        f'kubernetesVersion: "1.35"\n{hand_made}'
    )
    config = load_config(tmp_path)
    states = {
        "apps/local": RootState(None, tuple(parse_render("apps/local", applications))),
        **{root: RootState(None, tuple(parse_render(root, text))) for root, text in roots.items()},
    }
    files = {"values/chart.yaml": "auth:\n  existingSecret: chart-auth\n"}
    return [
        (
            problem.resource.reference if problem.resource else problem.file,
            problem.field,
            problem.message,
        )
        for problem in check_wave_order(states, config, files.get)
    ]


def own(path: str) -> dict[str, Any]:
    return {"repoURL": REPOSITORY_URL, "path": path, "targetRevision": "main"}


def deployment(pod_spec: str) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
{pod_spec}
---"""


WEB_READS = """\
      volumes:
        - name: config
          configMap:
            name: web-config
        - name: optional
          secret:
            secretName: maybe-later
            optional: true
      containers:
        - name: web
          image: web:1
          envFrom:
            - secretRef:
                name: web-token
"""

MAKES = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: token
spec:
  target:
    name: web-token
---
"""


@pytest.mark.parametrize(
    ("maker_wave", "expected"),
    [
        (-1, []),  # made a wave earlier
        (0, []),  # made in the reader's own wave: applied together, the pod waits, then starts
        (
            1,
            [
                (
                    "Deployment/web",
                    "spec.template.spec.volumes[0].configMap.name",
                    "ConfigMap apps/web-config is read by web (wave 0) but made at wave 1 by "
                    "ConfigMap/web-config of makers: Argo CD waits for wave 0 to be Healthy "
                    "before it applies wave 1, so a first sync of local never finishes",
                ),
                (
                    "Deployment/web",
                    "spec.template.spec.containers[0].envFrom[0].secretRef.name",
                    "Secret apps/web-token is read by web (wave 0) but made at wave 1 by "
                    "ExternalSecret/token of makers: Argo CD waits for wave 0 to be Healthy "
                    "before it applies wave 1, so a first sync of local never finishes",
                ),
            ],
        ),
    ],
)
def test_a_reader_waits_only_on_its_own_or_earlier_waves(tmp_path, maker_wave, expected):
    applications = application("web", 0, own("web")) + application(
        "makers", maker_wave, own("makers")
    )
    found = problems(tmp_path, applications, {"web": deployment(WEB_READS), "makers": MAKES})
    assert found == expected


def test_what_an_external_secret_merging_into_a_secret_does_not_make(tmp_path):
    merging = MAKES.replace(
        "    name: web-token\n", "    name: web-token\n    creationPolicy: Merge\n"
    )
    applications = application("web", 0, own("web")) + application("makers", -1, own("makers"))
    found = problems(tmp_path, applications, {"web": deployment(WEB_READS), "makers": merging})
    assert [(field, message.split(",")[0]) for _, field, message in found] == [
        ("spec.template.spec.containers[0].envFrom[0].secretRef.name", "Secret apps/web-token")
    ]


def test_chart_values_and_ingress_auth_are_reads_and_a_person_is_the_earliest_maker(tmp_path):
    chart = {
        "repoURL": "https://charts.example.test",
        "chart": "thing",
        "targetRevision": "1.0.0",
        "helm": {
            "valueFiles": ["$values/values/chart.yaml"],
            "valuesObject": {"alertmanager": {"alertmanagerSpec": {"secrets": ["receivers"]}}},
        },
    }
    applications = application("thing", -3, chart).replace(
        f"  source: {chart!r}",
        f"  sources:\n    - {chart!r}\n    - {{repoURL: {REPOSITORY_URL}, ref: values}}",
    ) + application("web", 0, own("web"))
    ingress = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations:
    nginx.ingress.kubernetes.io/auth-secret: web-basic-auth
    cert-manager.io/cluster-issuer: letsencrypt
spec:
  tls:
    - hosts: [web.example.test]
      secretName: web-tls
"""
    hand_made = (
        "secretsCreatedByHand:\n  local:\n"
        "    - {namespace: apps, name: chart-auth, keys: {password: hex:16}}\n"
    )
    found = problems(tmp_path, applications, {"web": ingress}, hand_made)
    assert [(where, field) for where, field, _message in found] == [
        ("spec.sources[0].helm.valuesObject", "alertmanager.alertmanagerSpec.secrets[0]"),
        ("Ingress/web", "metadata.annotations.nginx.ingress.kubernetes.io/auth-secret"),
    ]
    assert "Secret apps/receivers, read by thing (wave -3), is created by nothing" in found[0][2]

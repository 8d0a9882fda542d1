"""`mlopsctl bootstrap` as a whole, against a real kube-apiserver and etcd
(tests/support/kube_apiserver.py). Its modules' own tests are beside this one: test_plan.py (the
decisions before the cluster is touched), test_cluster.py (the cluster's side, called directly)
and test_report.py (what it says).

Argo CD's upstream install.yaml comes from GitHub, which these tests cannot reach. Each test
bootstraps a copy of the platform tree in which clusters/local/argocd names a thin stand-in of
that install instead (that one line is all that differs): Argo CD's Application and AppProject
CRDs, made from the project's schemas as `crds.py` makes them, the argocd-cm ConfigMap that
base/argocd-settings patches, and one argocd-server Deployment and Service. Argo CD's controller
cannot run here: where a test needs the rollout to progress, a thread writes the Applications'
status as the controller would, through the status subresource.

Each test that looks at what a bootstrap created gets an API server of its own (about 3 s to
start), so that no other test's objects can make "nothing was created" true by accident.
"""

from __future__ import annotations

import base64
import json
import re
import string
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from mlopsctl.base.kubeapi import KubeApi
from mlopsctl.bootstrap import cluster as bootstrap_cluster
from mlopsctl.validate.crds import crd
from mlopsctl.validate.schemas.store import PROJECT_SCHEMA_DIR
from tests.support import kube_apiserver
from tests.support.cli import CliResult
from tests.support.cluster_writes import application
from tests.support.kube_apiserver import TestApiServer
from tests.support.paths import TOOLS_DIR

ENVIRONMENT = "local"
CONTEXT = "kind-local"  # a context name that contains the environment's, as kind names them
UPSTREAM_INSTALL = re.compile(
    r"https://raw\.githubusercontent\.com/argoproj/argo-cd/v[0-9.]+/manifests/install\.yaml"
)
TOKEN = "token-of-the-test-0123456789"
APPLICATIONS = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications"
# What a bootstrap of local makes at least, besides the hand-made Secrets and their namespaces.
ARGOCD_OBJECTS = {
    ("CustomResourceDefinition", "", "applications.argoproj.io"),
    ("CustomResourceDefinition", "", "appprojects.argoproj.io"),
    ("Namespace", "", "argocd"),
    ("ConfigMap", "argocd", "argocd-cm"),
    ("Deployment", "argocd", "argocd-server"),
    ("Service", "argocd", "argocd-server"),
}
BOOTSTRAP_OBJECTS = {
    ("AppProject", "argocd", "bootstrap"),
    ("AppProject", "argocd", "operators"),
    ("AppProject", "argocd", "platform"),
    ("Application", "argocd", "root-local"),
}
SECRETS = {
    ("Namespace", "", "ml-platform"),
    ("Namespace", "", "monitoring"),
    ("Secret", "ml-platform", "mlflow-webhook-encryption"),
    ("Secret", "ml-platform", "promoter"),
    ("Secret", "monitoring", "grafana-admin"),
}
SERVERS_OWN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# Kinds looked at besides those the renders hold: what the Secrets need, and what a wrong
# bootstrap could leave behind.
LOOKED_AT = {
    ("v1", "Namespace"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("argoproj.io/v1alpha1", "AppProject"),
    ("argoproj.io/v1alpha1", "Application"),
}


# -- the stand-ins ------------------------------------------------------------------------------


def argocd_stand_in() -> list[dict[str, Any]]:
    """A thin stand-in of Argo CD's install.yaml: what bootstrap and the platform need of it."""
    schemas = PROJECT_SCHEMA_DIR / "argoproj.io"
    definitions = [
        crd(json.loads((schemas / f"{kind}_v1alpha1.json").read_text()), "argoproj.io", "v1alpha1")
        for kind in ("application", "appproject")
    ]
    labels = {"app.kubernetes.io/name": "argocd-server", "app.kubernetes.io/part-of": "argocd"}
    return [
        *definitions,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "argocd-cm",
                "labels": {
                    "app.kubernetes.io/name": "argocd-cm",
                    "app.kubernetes.io/part-of": "argocd",
                },
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "argocd-server", "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "argocd-server",
                                "image": "quay.io/argoproj/argocd:v3.3.6",
                                "args": ["/usr/local/bin/argocd-server"],
                                "ports": [{"containerPort": 8080}],
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "argocd-server", "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "https", "port": 443, "targetPort": 8080},
                ],
            },
        },
    ]


@pytest.fixture
def platform(platform_copy: Path) -> Path:
    """The platform tree, its Argo CD install replaced by the stand-in (and nothing else)."""
    directory = platform_copy / "clusters" / ENVIRONMENT / "argocd"
    (directory / "install.yaml").write_text(yaml.safe_dump_all(argocd_stand_in()))
    kustomization = directory / "kustomization.yaml"
    text = kustomization.read_text()
    assert len(UPSTREAM_INSTALL.findall(text)) == 1, text
    kustomization.write_text(UPSTREAM_INSTALL.sub("install.yaml", text))
    return platform_copy


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestApiServer]:
    """An API server of this test's own."""
    started = kube_apiserver.start(tmp_path / "kube-apiserver")
    yield started
    started.stop()


@pytest.fixture
def kube(server: TestApiServer) -> Iterator[KubeApi]:
    client = KubeApi(server.kubeconfig)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def git_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_TOKEN", TOKEN)
    monkeypatch.setattr(bootstrap_cluster, "POLL_SECONDS", 0.1)


def kubeconfig(server: TestApiServer, path: Path, *contexts: str) -> Path:
    """The server's kubeconfig with these context names (the first one current)."""
    document = yaml.safe_load(server.kubeconfig.read_text())
    document["contexts"] = [
        {"name": name, "context": {"cluster": "test", "user": "test"}} for name in contexts
    ]
    document["current-context"] = contexts[0]
    path.write_text(yaml.safe_dump(document))
    return path


def bootstrap(cli: Callable[..., CliResult], platform: Path, *arguments: str) -> CliResult:
    result: CliResult = cli("bootstrap", "--env", ENVIRONMENT, "--repo", str(platform), *arguments)
    assert "Traceback" not in result.stderr
    return result


def rendered(platform: Path) -> set[tuple[str, str, str, str]]:
    """(apiVersion, kind, namespace, name) of what clusters/local/argocd and clusters/local
    render, built by the pinned kustomize itself."""
    found = set()
    for root in ("clusters/local/argocd", "clusters/local"):
        output = subprocess.run(
            [str(TOOLS_DIR / "bin" / "kustomize"), "build", str(platform / root)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for body in yaml.safe_load_all(output):
            metadata = body["metadata"]
            found.add(
                (body["apiVersion"], body["kind"], metadata.get("namespace", ""), metadata["name"])
            )
    return found


def objects(kube: KubeApi, platform: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every object of the kinds bootstrap makes (the renders' and LOOKED_AT), by (kind,
    namespace, name), listed cluster-wide."""
    kinds = LOOKED_AT | {(api_version, kind) for api_version, kind, _, _ in rendered(platform)}
    kube.forget_discovery()
    served = kube.resources()
    found = {}
    for api_version, kind in sorted(kinds):
        where = served.get((api_version, kind))
        if where is None:  # Argo CD's kinds before its CRDs
            continue
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        status, listing = kube.request("GET", f"{prefix}/{where.plural}")
        assert status == 200, listing
        for item in listing["items"]:
            metadata = item["metadata"]
            found[(kind, metadata.get("namespace", ""), metadata["name"])] = item
    return found


def new_objects(
    kube: KubeApi, platform: Path, before: dict[tuple[str, str, str], str]
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The objects that were not there `before`, but for those the API server makes itself in
    its own namespaces (the `kubernetes` Service, leases)."""
    return {
        key: item
        for key, item in objects(kube, platform).items()
        if key not in before and key[1] not in SERVERS_OWN_NAMESPACES
    }


def versions(found: dict[tuple[str, str, str], dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    return {key: item["metadata"]["resourceVersion"] for key, item in found.items()}


def secret_values(kube: KubeApi, namespace: str, name: str) -> dict[str, str]:
    status, secret = kube.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    assert status == 200, secret
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def write_status(kube: KubeApi, name: str, sync: str, health: str, **operation: str) -> None:
    status: dict[str, Any] = {"sync": {"status": sync}, "health": {"status": health}}
    if operation:
        status["operationState"] = operation
    answer_status, answer = kube.request(
        "PATCH",
        f"{APPLICATIONS}/{name}/status",
        json.dumps({"status": status}).encode(),
        "application/merge-patch+json",
    )
    assert answer_status == 200, answer


def create_application(kube: KubeApi, name: str) -> None:
    """A child Application, as the root Application would create it from apps/local."""
    component = name.removesuffix("-" + ENVIRONMENT)
    refusal = kube.apply(
        application(ENVIRONMENT, component, "ml-platform"),
        "argocd",
        dry_run=False,
    )
    assert refusal is None, refusal


class Controller(threading.Thread):
    """Argo CD's controller as far as these tests need it: once bootstrap has created the root
    Application, it runs `steps` (each a callable on the client), a pause apart."""

    def __init__(self, kube: KubeApi, steps: list[Callable[[KubeApi], None]], pause: float):
        super().__init__(daemon=True)
        self.kube, self.steps, self.pause = kube, steps, pause
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 120
            while self.kube.request("GET", f"{APPLICATIONS}/root-local")[0] != 200:
                assert time.monotonic() < deadline, "bootstrap never created root-local"
                time.sleep(0.05)
            for step in self.steps:
                step(self.kube)
                time.sleep(self.pause)
        except BaseException as error:  # reported by the test, not lost in the thread
            self.failure = error


# -- against the API server ---------------------------------------------------------------------


def test_bootstrap_creates_the_environment_and_a_second_run_changes_nothing(
    cli: Callable[..., CliResult],
    platform: Path,
    server: TestApiServer,
    kube: KubeApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = kubeconfig(server, tmp_path / "kubeconfig", CONTEXT)
    empty = versions(objects(kube, platform))

    first = bootstrap(cli, platform, "--kubeconfig", str(config), "--no-wait")

    assert first.exit_code == 0, first.stderr
    made = new_objects(kube, platform, empty)
    # Exactly what the two roots render, and the hand-made Secrets with their namespaces.
    assert set(made) == {key[1:] for key in rendered(platform)} | SECRETS
    assert set(made) >= ARGOCD_OBJECTS | BOOTSTRAP_OBJECTS
    # The Secrets: every key, each value of the shape its recipe promises, none printed.
    fernet = secret_values(kube, "ml-platform", "mlflow-webhook-encryption")
    promoter = secret_values(kube, "ml-platform", "promoter")
    grafana = secret_values(kube, "monitoring", "grafana-admin")
    assert set(fernet) == {"fernet-key"}
    Fernet(fernet["fernet-key"].encode())  # refuses anything but a Fernet key
    assert set(promoter) == {"webhook-secret", "git-token"}
    assert len(promoter["webhook-secret"]) == 64
    assert set(promoter["webhook-secret"]) <= set(string.hexdigits.lower())
    assert promoter["git-token"] == TOKEN
    assert set(grafana) == {"admin-user", "admin-password"}
    assert grafana["admin-user"] == "admin"
    assert len(base64.b64decode(grafana["admin-password"], validate=True)) == 24
    for value in (
        fernet["fernet-key"],
        promoter["webhook-secret"],
        TOKEN,
        grafana["admin-password"],
    ):
        assert value not in first.stdout + first.stderr
    assert (
        "Secret ml-platform/promoter: created with keys webhook-secret, git-token" in first.stdout
    )
    # Argo CD with this platform's settings, and the root Application pointed at apps/local.
    argocd_cm = made[("ConfigMap", "argocd", "argocd-cm")]
    assert argocd_cm["data"]["application.resourceTrackingMethod"] == "annotation"
    assert "resource.customizations.health.argoproj.io_Application" in argocd_cm["data"]
    root = made[("Application", "argocd", "root-local")]
    assert root["spec"]["source"]["path"] == "apps/local"
    assert root["spec"]["project"] == "bootstrap"
    assert "applied clusters/local/argocd: 2 CRDs and " in first.stdout
    assert "applied clusters/local: 0 CRDs and 4 other objects" in first.stdout
    assert "kubectl port-forward -n argocd svc/argocd-server 8080:443" in first.stdout
    assert (
        "mlflow-ui: http://localhost:5000 after kubectl port-forward -n ml-platform "
        "svc/mlflow-tracking 5000:5000"
    ) in first.stdout

    before = versions(objects(kube, platform))
    values_before = [fernet, promoter, grafana]
    # The token is needed only to make a missing promoter Secret: a second run does without.
    monkeypatch.delenv("GIT_TOKEN")
    second = bootstrap(cli, platform, "--kubeconfig", str(config), "--no-wait")

    assert second.exit_code == 0, second.stderr
    assert versions(objects(kube, platform)) == before
    assert [
        secret_values(kube, "ml-platform", "mlflow-webhook-encryption"),
        secret_values(kube, "ml-platform", "promoter"),
        secret_values(kube, "monitoring", "grafana-admin"),
    ] == values_before
    assert second.stdout.count("exists, kept as it is") == 3
    assert "created" not in second.stdout


def test_a_context_that_is_not_the_environments_is_refused_until_confirmed(
    cli: Callable[..., CliResult],
    platform: Path,
    server: TestApiServer,
    kube: KubeApi,
    tmp_path: Path,
) -> None:
    config = kubeconfig(server, tmp_path / "kubeconfig", "gke-staging", "kind-local")
    before = versions(objects(kube, platform))

    refused = bootstrap(cli, platform, "--kubeconfig", str(config), "--no-wait")

    assert refused.exit_code == 2
    assert (
        "context 'gke-staging' does not look like environment 'local''s cluster" in refused.stderr
    )
    assert "--confirm-context gke-staging" in refused.stderr
    assert versions(objects(kube, platform)) == before

    # A confirmation counts for the context it names only.
    other = bootstrap(
        cli, platform, "--kubeconfig", str(config), "--confirm-context", "kind-local", "--no-wait"
    )
    assert other.exit_code == 2
    assert "--confirm-context 'kind-local' does not name the context in use" in other.stderr
    assert versions(objects(kube, platform)) == before

    # Where mlopsctl.yaml names the environment's context, that one and no other will do, even
    # one whose name contains the environment's.
    settings = platform / "mlopsctl.yaml"
    settings.write_text(
        settings.read_text().replace(
            "environments: [local, staging, production]",
            "environments:\n  local: {kubeContext: gke-staging}\n  staging: {}\n  production: {}",
        )
    )
    named = bootstrap(cli, platform, "--kubeconfig", str(config), "--context", "kind-local")
    assert named.exit_code == 2
    assert "mlopsctl.yaml names 'gke-staging' (environments.local.kubeContext)" in named.stderr
    assert versions(objects(kube, platform)) == before

    confirmed = bootstrap(
        cli,
        platform,
        "--kubeconfig",
        str(config),
        "--context",
        "kind-local",
        "--confirm-context",
        "kind-local",
        "--no-wait",
    )
    assert confirmed.exit_code == 0, confirmed.stderr
    assert (
        set(new_objects(kube, platform, before))
        == {key[1:] for key in rendered(platform)} | SECRETS
    )


def test_a_missing_git_token_is_refused_before_anything_is_created(
    cli: Callable[..., CliResult],
    platform: Path,
    server: TestApiServer,
    kube: KubeApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = kubeconfig(server, tmp_path / "kubeconfig", CONTEXT)
    before = versions(objects(kube, platform))

    monkeypatch.delenv("GIT_TOKEN")
    unset = bootstrap(cli, platform, "--kubeconfig", str(config), "--no-wait")
    monkeypatch.setenv("GIT_TOKEN", "")
    empty = bootstrap(cli, platform, "--kubeconfig", str(config), "--no-wait")

    assert (unset.exit_code, empty.exit_code) == (2, 2)
    assert "Secret ml-platform/promoter needs a git token" in unset.stderr
    assert "$GIT_TOKEN is not set" in unset.stderr
    assert "$GIT_TOKEN is empty" in empty.stderr
    assert versions(objects(kube, platform)) == before

    monkeypatch.setenv("PLATFORM_PUSH_TOKEN", "another-token")
    other = bootstrap(
        cli,
        platform,
        "--kubeconfig",
        str(config),
        "--git-token-env",
        "PLATFORM_PUSH_TOKEN",
        "--no-wait",
    )
    assert other.exit_code == 0, other.stderr
    assert secret_values(kube, "ml-platform", "promoter")["git-token"] == "another-token"


def test_progress_ends_when_every_application_is_synced_and_healthy(
    cli: Callable[..., CliResult],
    platform: Path,
    server: TestApiServer,
    kube: KubeApi,
    tmp_path: Path,
) -> None:
    config = kubeconfig(server, tmp_path / "kubeconfig", CONTEXT)
    controller = Controller(
        kube,
        [
            lambda client: write_status(client, "root-local", "Synced", "Progressing"),
            lambda client: create_application(client, "mlflow-tracking-local"),
            lambda client: write_status(client, "mlflow-tracking-local", "Synced", "Progressing"),
            lambda client: write_status(client, "mlflow-tracking-local", "Synced", "Healthy"),
            lambda client: write_status(client, "root-local", "Synced", "Healthy"),
        ],
        pause=1.0,
    )
    controller.start()

    result = bootstrap(cli, platform, "--kubeconfig", str(config), "--timeout", "120")

    controller.join(timeout=30)
    assert controller.failure is None, controller.failure
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()

    def first(pattern: str) -> int:
        return next(index for index, line in enumerate(lines) if re.search(pattern, line))

    # One line per change, in the order the controller made them. (Whether a poll lands in the
    # second the new Application has no status yet, "Unknown, Unknown", depends on the machine.)
    assert (
        first(r"root-local\s+Synced, Progressing$")
        < first(r"mlflow-tracking-local\s+Synced, Progressing$")
        < first(r"mlflow-tracking-local\s+Synced, Healthy$")
        < first(r"root-local\s+Synced, Healthy$")
    )
    assert 2 <= len([line for line in lines if re.search(r"mlflow-tracking-local\s", line)]) <= 3
    assert first("How to reach the UIs") > first(r"root-local\s+Synced, Healthy$")


def test_progress_that_does_not_finish_in_time_names_what_is_not_ready(
    cli: Callable[..., CliResult],
    platform: Path,
    server: TestApiServer,
    kube: KubeApi,
    tmp_path: Path,
) -> None:
    config = kubeconfig(server, tmp_path / "kubeconfig", CONTEXT)
    controller = Controller(
        kube,
        [
            lambda client: create_application(client, "model-server-local"),
            lambda client: write_status(
                client,
                "model-server-local",
                "OutOfSync",
                "Degraded",
                phase="Failed",
                message="one or more objects failed to apply",
            ),
            lambda client: write_status(client, "root-local", "Synced", "Healthy"),
        ],
        pause=0.1,
    )
    controller.start()

    started = time.monotonic()
    result = bootstrap(cli, platform, "--kubeconfig", str(config), "--timeout", "4")

    controller.join(timeout=30)
    assert controller.failure is None, controller.failure
    assert result.exit_code == 1
    assert time.monotonic() - started < 30
    assert (
        "not Synced and Healthy after 4 s: model-server-local (OutOfSync, Degraded, last sync "
        "Failed: one or more objects failed to apply)"
    ) in result.stderr
    assert "root-local (" not in result.stderr
    assert "How to reach the UIs" in result.stdout


def test_an_object_the_api_server_refuses_is_named_with_its_root(
    cli: Callable[..., CliResult],
    platform: Path,
    server: TestApiServer,
    tmp_path: Path,
) -> None:
    install = platform / "clusters" / ENVIRONMENT / "argocd" / "install.yaml"
    documents = list(yaml.safe_load_all(install.read_text()))
    service = next(body for body in documents if body["kind"] == "Service")
    service["spec"]["ports"][0]["targetPortt"] = 8080  # strict field validation refuses it
    install.write_text(yaml.safe_dump_all(documents))

    result = bootstrap(
        cli, platform, "--kubeconfig", str(kubeconfig(server, tmp_path / "k", CONTEXT))
    )

    assert result.exit_code == 2
    assert result.stderr.startswith(
        "mlopsctl: error: clusters/local/argocd: Service/argocd/argocd-server: the API server "
        f"({server.url}) refuses it: "
    ), result.stderr
    assert "targetPortt: field not declared in schema" in result.stderr, result.stderr
    assert "applied clusters/local/argocd" not in result.stdout
    # On a fresh cluster the argocd namespace is made by the same apply, so nothing could judge
    # the Service before: the error says what stays.
    assert "what was created or applied before it stays; fix it and run" in result.stderr

    # Now that the namespace exists, the dry run refuses it before anything is made.
    again = bootstrap(
        cli, platform, "--kubeconfig", str(kubeconfig(server, tmp_path / "k", CONTEXT))
    )
    assert again.exit_code == 2
    assert "targetPortt: field not declared in schema" in again.stderr, again.stderr
    assert "nothing was changed (dry run, before creating anything)" in again.stderr
    assert "Secret" not in again.stdout and "namespace" not in again.stdout


def test_bad_kubeconfigs_and_an_unreachable_server_are_clear_errors(
    cli: Callable[..., CliResult], platform: Path, tmp_path: Path
) -> None:
    unreachable = tmp_path / "unreachable"
    unreachable.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": CONTEXT, "context": {"cluster": "c", "user": "u"}}],
                "current-context": CONTEXT,
            }
        )
    )
    dangling = tmp_path / "dangling"
    dangling.write_text(
        yaml.safe_dump(
            {
                "contexts": [{"name": CONTEXT, "context": {"cluster": "gone", "user": "u"}}],
                "current-context": CONTEXT,
            }
        )
    )

    cases = [
        (
            unreachable,
            [],
            f"context '{CONTEXT}' ({unreachable}): https://127.0.0.1:9: cannot reach the API "
            "server",
        ),
        (tmp_path / "absent", [], f"{tmp_path / 'absent'}: cannot read the kubeconfig"),
        (
            unreachable,
            ["--context", "kind-elsewhere"],
            f"{unreachable}: no context 'kind-elsewhere' (has ['{CONTEXT}'])",
        ),
        (dangling, [], "names a cluster or user the file does not define"),
    ]
    for path, extra, message in cases:
        result = bootstrap(cli, platform, "--kubeconfig", str(path), "--no-wait", *extra)
        assert result.exit_code == 2, (path, result)
        assert result.stderr.startswith("mlopsctl: error: "), result.stderr
        assert message in result.stderr, result.stderr

    unknown = cli("bootstrap", "--env", "qa", "--repo", str(platform))
    assert unknown.exit_code == 2
    assert "--env 'qa' is not one of ['local', 'staging', 'production']" in unknown.stderr

"""Stand-ins for the operators the charts install, which cannot be rendered or run here.

- CloudNativePG: a `Cluster` becomes what the operator makes of it: one instance pod running
  PostgreSQL (Debian's server, standing in for the operator's image, run by the kubelet like
  every pod: its own namespace, user, read-only root, cgroup, probes) with its metrics on port
  9187 (`metrics`, the operator's series names, from `cnpg_metrics.py` beside the server), the
  `-rw`/`-ro`/`-r` Services, the storage claim, and the `<cluster>-app` Secret with the keys the
  operator writes (username, password, dbname, host, port, pgpass, uri, jdbc-uri, fqdn-uri,
  fqdn-jdbc-uri).
- The Prometheus Operator (kube-prometheus-stack): Prometheus (Debian's) as a pod of
  `monitoring`, scraping what the ServiceMonitors and PodMonitors select, with the
  PrometheusRules loaded (checked by promtool first), and a kube-state-metrics stand-in served
  by the run for the rules that read Deployment state.

Each is named as a stand-in wherever the run reports it.
"""

from __future__ import annotations

import contextlib
import http.server
import secrets
import shutil
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.localrun import prometheus, prometheus_config, workloads
from mlopsctl.localrun.model import (
    Container,
    ContainerPort,
    EnvVar,
    Exec,
    HttpGet,
    KeyReference,
    ObjectReference,
    PodTemplate,
    Probe,
    Resources,
    SecurityContext,
    Volume,
    VolumeMount,
    Workload,
)

if TYPE_CHECKING:
    from mlopsctl.localrun.cluster import Cluster, Health

POSTGRES_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
CNPG_METRICS_PORT = 9187
_CNPG_EXPORTER = Path(__file__).with_name("cnpg_metrics.py")
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def restricted(uid: int, gid: int) -> SecurityContext:
    """The restricted security context the operators' own pods run with."""
    return SecurityContext(
        run_as_user=uid,
        run_as_group=gid,
        run_as_non_root=True,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        drop_all_capabilities=True,
        fs_group=gid,
    )


@dataclass(frozen=True)
class HostRecipe:
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    workdir: str = "/"
    user: str | None = None


@dataclass(frozen=True)
class HostImage:
    """Software of this machine (a Debian package) standing in for an upstream image."""

    description: str
    recipe: HostRecipe = field(default_factory=HostRecipe)
    passwd_lines: tuple[str, ...] = ()
    group_lines: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=lambda: {"PATH": STANDARD_PATH})
    python_prefix: Path | None = None
    venv: Path | None = None
    rootfs: Path = Path("/nonexistent")


def _user_ids(name: str) -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise LocalRunError(
            f"the user {name!r} does not exist: is its Debian package installed?"
        ) from None
    return entry.pw_uid, entry.pw_gid


# -- CloudNativePG --------------------------------------------------------------------------------

_CLUSTER_SPEC_FIELDS = frozenset(
    {
        "instances",
        "imageName",
        "inheritedMetadata",
        "bootstrap",
        "storage",
        "resources",
        "affinity",
        "primaryUpdateStrategy",
    }
)

_BOOTSTRAP = r"""set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" --username=postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 >/dev/null
  printf 'host all all 0.0.0.0/0 scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /controller/run" -w start >/dev/null
  psql -h /controller/run -U postgres -q -v ON_ERROR_STOP=1 -v user="$APP_USER" \
    -v password="$APP_PASSWORD" -v database="$APP_DATABASE" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"database" OWNER :"user";
SQL
  pg_ctl -D "$PGDATA" -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c port=5432 -k /controller/run
"""


class CloudNativePG:
    """The operator's part for `postgresql.cnpg.io/v1` Clusters (one instance)."""

    kinds: tuple[str, ...] = ("Cluster",)

    def __init__(self) -> None:
        self.clusters: dict[tuple[str, str], dict[str, Any]] = {}
        uid, gid = _user_ids("postgres")
        if not POSTGRES_BIN:
            raise LocalRunError("PostgreSQL is not installed (Debian's postgresql package)")
        self.version = POSTGRES_BIN[-1].parent.name
        self.uid, self.gid = uid, gid
        self.image = HostImage(
            f"PostgreSQL {self.version} from Debian",
            environment={"PATH": f"{POSTGRES_BIN[-1]}:{STANDARD_PATH}", "LANG": "C.UTF-8"},
        )

    @staticmethod
    def creates(body: dict[str, Any]) -> list[tuple[str, str, str]]:
        """What the operator makes of a Cluster that others may read: its `-app` Secret."""
        if body.get("kind") != "Cluster" or not str(body.get("apiVersion", "")).startswith(
            "postgresql.cnpg.io/"
        ):
            return []
        reference = workloads.reference_of(body)
        return [("Secret", reference.namespace, f"{reference.name}-app")]

    def apply(self, body: dict[str, Any], cluster: Cluster) -> None:
        reference = workloads.reference_of(body)
        spec = body.get("spec") or {}
        for key in spec:
            if key not in _CLUSTER_SPEC_FIELDS:
                raise UnsupportedManifest(
                    reference,
                    f"spec.{key}",
                    "not supported by the local run's CloudNativePG stand-in",
                )
        if int(spec.get("instances", 1)) != 1:
            raise UnsupportedManifest(
                reference,
                "spec.instances",
                "the local run's CloudNativePG stand-in runs one instance",
            )
        initdb = ((spec.get("bootstrap") or {}).get("initdb")) or {}
        database = str(initdb.get("database", "app"))
        owner = str(initdb.get("owner", database))
        namespace, name = reference.namespace, reference.name
        self.clusters[(namespace, name)] = body
        secret_name = f"{name}-app"
        existing = cluster.config_data("Secret", namespace, secret_name)
        password = existing["password"] if existing else secrets.token_urlsafe(48)[:64]
        cluster.apply(
            _app_secret(namespace, name, secret_name, owner, password, database), f"cnpg:{name}"
        )
        for suffix, role in (("rw", "primary"), ("ro", "replica"), ("r", None)):
            selector = {"cnpg.io/cluster": name}
            if role:
                selector["cnpg.io/instanceRole"] = role
            cluster.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {
                        "name": f"{name}-{suffix}",
                        "namespace": namespace,
                        "labels": {"cnpg.io/cluster": name},
                    },
                    "spec": {
                        "selector": selector,
                        "ports": [{"name": "postgres", "port": 5432, "targetPort": 5432}],
                    },
                },
                f"cnpg:{name}",
            )
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": f"{name}-1", "namespace": namespace},
                "spec": {
                    "resources": {
                        "requests": {"storage": (spec.get("storage") or {}).get("size", "1Gi")}
                    }
                },
            },
            f"cnpg:{name}",
        )
        labels = {
            **{
                str(k): str(v)
                for k, v in ((spec.get("inheritedMetadata") or {}).get("labels") or {}).items()
            },
            "cnpg.io/cluster": name,
            "cnpg.io/instanceName": f"{name}-1",
            "cnpg.io/instanceRole": "primary",
            "cnpg.io/podRole": "instance",
            "role": "primary",
        }
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"{name}-metrics-exporter",
                    "namespace": namespace,
                    "labels": {"cnpg.io/cluster": name},
                },
                "data": {"exporter.py": _CNPG_EXPORTER.read_text()},
            },
            f"cnpg:{name}",
        )
        resources = workloads._resources(spec.get("resources"), reference, "spec.resources")
        workload = self._instance(reference, labels, resources, secret_name, owner, database)
        cluster.apply_workload(workload, f"cnpg:{name}", fixed_names=(f"{name}-1",))

    def _instance(
        self,
        reference: ObjectReference,
        labels: dict[str, str],
        resources: Resources,
        secret_name: str,
        owner: str,
        database: str,
    ) -> Workload:
        ready = Probe(
            Exec(("pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432")),
            period_seconds=2,
            timeout_seconds=5,
        )
        container = Container(
            name="postgres",
            image=f"cnpg-stand-in/{reference.name}",
            command=("/bin/sh", "-c", _BOOTSTRAP),
            args=None,
            env=(
                EnvVar("PGDATA", "/var/lib/postgresql/data/pgdata"),
                EnvVar("APP_USER", owner),
                EnvVar("APP_DATABASE", database),
                EnvVar("APP_PASSWORD", reference=KeyReference("Secret", secret_name, "password")),
            ),
            ports=(ContainerPort("postgresql", 5432),),
            startup_probe=Probe(
                ready.action, period_seconds=1, timeout_seconds=5, failure_threshold=120
            ),
            readiness_probe=ready,
            liveness_probe=Probe(ready.action, period_seconds=10, timeout_seconds=5),
            resources=resources,
            security=restricted(self.uid, self.gid),
            mounts=(
                VolumeMount("pgdata", "/var/lib/postgresql/data"),
                VolumeMount("run", "/controller/run"),
                VolumeMount("tmp", "/tmp"),
            ),
        )
        # The operator's instance manager serves these from inside the postgres container; here a
        # second container does, over the same Unix socket.
        exporter = Container(
            name="metrics-exporter",
            image=f"cnpg-stand-in/{reference.name}",
            command=(
                "python3",
                "/controller/exporter/exporter.py",
                f"--port={CNPG_METRICS_PORT}",
                "--socket-directory=/controller/run",
                f"--cluster={reference.name}",
            ),
            args=None,
            ports=(ContainerPort("metrics", CNPG_METRICS_PORT),),
            resources=Resources(
                cpu_request_millis=10,
                cpu_limit_millis=200,
                memory_request_bytes=32 << 20,
                memory_limit_bytes=64 << 20,
            ),
            security=restricted(self.uid, self.gid),
            mounts=(
                VolumeMount("run", "/controller/run"),
                VolumeMount("exporter", "/controller/exporter", read_only=True),
            ),
        )
        template = PodTemplate(
            labels=tuple(sorted(labels.items())),
            annotations=(),
            containers=(container, exporter),
            volumes=(
                Volume("pgdata", "persistentVolumeClaim", source=f"{reference.name}-1"),
                Volume("run", "emptyDir"),
                Volume("tmp", "emptyDir"),
                Volume("exporter", "configMap", source=f"{reference.name}-metrics-exporter"),
            ),
            termination_grace_seconds=30,
            enable_service_links=False,
        )
        return Workload(
            ObjectReference("StatefulSet", reference.namespace, reference.name),
            template,
            strategy="Recreate",
        )

    def delete(self, reference: ObjectReference, cluster: Cluster) -> None:
        self.clusters.pop((reference.namespace, reference.name), None)
        cluster.delete("StatefulSet", reference.namespace, reference.name)

    def health(self, reference: ObjectReference, cluster: Cluster) -> tuple[Health, str]:
        state, message = cluster.health("StatefulSet", reference.namespace, reference.name)
        return state, ("Cluster in healthy state" if state == "Healthy" else message)

    def reconcile(self, cluster: Cluster) -> None:
        return None


def _app_secret(
    namespace: str, cluster_name: str, secret_name: str, user: str, password: str, database: str
) -> dict[str, Any]:
    host = f"{cluster_name}-rw"
    quoted = urllib.parse.quote(password, safe="")
    short = f"{host}.{namespace}:5432"
    fqdn = f"{host}.{namespace}.svc.cluster.local:5432"
    query = urllib.parse.urlencode({"password": password, "user": user})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/basic-auth",
        "metadata": {
            "name": secret_name,
            "namespace": namespace,
            "labels": {"cnpg.io/cluster": cluster_name},
        },
        "stringData": {
            "username": user,
            "user": user,
            "password": password,
            "dbname": database,
            "host": host,
            "port": "5432",
            "pgpass": f"{host}:5432:{database}:{user}:{password}\n",
            "uri": f"postgresql://{user}:{quoted}@{short}/{database}",
            "jdbc-uri": f"jdbc:postgresql://{short}/{database}?{query}",
            "fqdn-uri": f"postgresql://{user}:{quoted}@{fqdn}/{database}",
            "fqdn-jdbc-uri": f"jdbc:postgresql://{fqdn}/{database}?{query}",
        },
    }


# -- kube-prometheus-stack ------------------------------------------------------------------------

PROMETHEUS_NAMESPACE = "monitoring"
PROMETHEUS_NAME = "prometheus-kube-prometheus-stack-prometheus"


class PrometheusStack:
    """Prometheus and the operator's reading of monitors and rules."""

    kinds: tuple[str, ...] = ("ServiceMonitor", "PodMonitor", "PrometheusRule")

    def __init__(
        self,
        values: Mapping[str, Any],
        scrape_interval_override: str | None,
        evaluation_interval: str,
        kube_state_metrics_port: int,
    ) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.values = values
        self.scrape_interval_override = scrape_interval_override
        self.evaluation_interval = evaluation_interval
        self.kube_state_metrics_port = kube_state_metrics_port
        uid, gid = _user_ids("prometheus")
        self.uid, self.gid = uid, gid
        self.image = HostImage("Prometheus from Debian")
        self._written = ""
        self.rule_sources: dict[str, str] = {}
        self.error = ""
        self.config_directory: Path | None = None

    def apply(self, body: dict[str, Any], cluster: Cluster) -> None:
        reference = workloads.reference_of(body)
        # Refuse what the operator's reading here cannot honour before accepting the object.
        if reference.kind == "PrometheusRule":
            prometheus_config.rule_files([body])
        else:
            monitors = [body] if reference.kind == "ServiceMonitor" else []
            pod_monitors = [body] if reference.kind == "PodMonitor" else []
            prometheus_config.scrape_configs(monitors, pod_monitors, [], [])
        self.objects[(reference.kind, reference.namespace, reference.name)] = body

    def delete(self, reference: ObjectReference, cluster: Cluster) -> None:
        self.objects.pop((reference.kind, reference.namespace, reference.name), None)

    def health(self, reference: ObjectReference, cluster: Cluster) -> tuple[Health, str]:
        return "Healthy", ""

    def install(self, cluster: Cluster) -> None:
        """What the chart installs that the run needs: Prometheus itself, as a pod."""
        cluster.ensure_namespace(PROMETHEUS_NAMESPACE)
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "prometheus-config", "namespace": PROMETHEUS_NAMESPACE},
                "spec": {},
            },
            "kube-prometheus-stack",
        )
        self.config_directory = cluster.claim_directory(
            PROMETHEUS_NAMESPACE,
            "prometheus-config",
            ObjectReference("Prometheus", PROMETHEUS_NAMESPACE, "kube-prometheus-stack"),
        )
        self._write(cluster)
        spec = (self.values.get("prometheus") or {}).get("prometheusSpec") or {}
        resources = workloads._resources(
            spec.get("resources"),
            ObjectReference("Prometheus", PROMETHEUS_NAMESPACE, "kube-prometheus-stack"),
            "prometheus.prometheusSpec.resources",
        )
        retention = str(spec.get("retention", "10d"))
        ready = Probe(
            HttpGet("/-/ready", 9090), period_seconds=5, timeout_seconds=3, failure_threshold=3
        )
        container = Container(
            name="prometheus",
            image="prometheus-stand-in",
            command=tuple(
                prometheus.command(
                    Path("/etc/prometheus/config/prometheus.yaml"),
                    Path("/prometheus"),
                    "0.0.0.0:9090",
                    retention=retention,
                )
            ),
            args=None,
            ports=(ContainerPort("http-web", 9090),),
            startup_probe=Probe(
                ready.action, period_seconds=1, timeout_seconds=3, failure_threshold=60
            ),
            readiness_probe=ready,
            liveness_probe=Probe(
                HttpGet("/-/healthy", 9090),
                period_seconds=10,
                timeout_seconds=3,
                failure_threshold=6,
            ),
            resources=resources,
            security=restricted(self.uid, self.gid),
            mounts=(
                VolumeMount("config", "/etc/prometheus/config", read_only=True),
                VolumeMount("data", "/prometheus"),
            ),
        )
        template = PodTemplate(
            labels=(
                ("app.kubernetes.io/name", "prometheus"),
                ("prometheus", "kube-prometheus-stack-prometheus"),
            ),
            annotations=(),
            containers=(container,),
            volumes=(
                Volume("config", "persistentVolumeClaim", source="prometheus-config"),
                Volume("data", "emptyDir"),
            ),
            enable_service_links=False,
        )
        workload = Workload(
            ObjectReference("StatefulSet", PROMETHEUS_NAMESPACE, PROMETHEUS_NAME),
            template,
            strategy="Recreate",
        )
        cluster.apply_workload(
            workload, "kube-prometheus-stack", fixed_names=(f"{PROMETHEUS_NAME}-0",)
        )
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kube-prometheus-stack-prometheus",
                    "namespace": PROMETHEUS_NAMESPACE,
                },
                "spec": {
                    "selector": {"app.kubernetes.io/name": "prometheus"},
                    "ports": [{"name": "http-web", "port": 9090, "targetPort": 9090}],
                },
            },
            "kube-prometheus-stack",
        )

    def _monitors(self, kind: str) -> list[dict[str, Any]]:
        return [body for (k, _, _), body in sorted(self.objects.items()) if k == kind]

    def _write(self, cluster: Cluster) -> bool:
        """Write the configuration and rules; True when they changed."""
        if self.config_directory is None:
            return False
        services = [service for service, _ in cluster.services.values()]
        pods = cluster.pod_addresses()
        scrape = prometheus_config.scrape_configs(
            self._monitors("ServiceMonitor"),
            self._monitors("PodMonitor"),
            services,
            pods,
            scrape_interval_override=self.scrape_interval_override,
        )
        rules = prometheus_config.rule_files(self._monitors("PrometheusRule"))
        kube_state_metrics = {
            "job_name": "kube-state-metrics",
            "scrape_interval": self.scrape_interval_override or "30s",
            "static_configs": [
                {
                    "targets": [f"{cluster.network.node_address}:{self.kube_state_metrics_port}"],
                    "labels": {"job": "kube-state-metrics", "namespace": PROMETHEUS_NAMESPACE},
                }
            ],
        }
        text = prometheus_config.prometheus_yaml(
            scrape,
            [f"/etc/prometheus/config/{name}" for name in sorted(rules)],
            evaluation_interval=self.evaluation_interval,
            extra_scrape_configs=[kube_state_metrics],
        )
        snapshot = text + yaml.safe_dump(rules, sort_keys=True)
        if snapshot == self._written:
            return False
        directory = self.config_directory
        # The rules are checked beside the directory Prometheus reads, and moved in only once
        # promtool accepts them: Prometheus reads its rule files again at every reload and
        # restart, and one it refuses keeps it from starting.
        checking = directory.with_name(f".{directory.name}.checking")
        shutil.rmtree(checking, ignore_errors=True)
        checking.mkdir(parents=True)
        try:
            paths = []
            for name, content in rules.items():
                path = checking / name
                path.write_text(content)
                path.chmod(0o644)
                paths.append(path)
            try:
                prometheus.check_rules(
                    paths,
                    origins=prometheus_config.rule_file_origins(self._monitors("PrometheusRule")),
                )
            except LocalRunError as error:
                self.error = str(error)
                raise
            for old in directory.glob("*.yaml"):
                if old.name != "prometheus.yaml" and old.name not in rules:
                    old.unlink()
            for path in paths:
                path.replace(directory / path.name)
        finally:
            shutil.rmtree(checking, ignore_errors=True)
        (directory / "prometheus.yaml").write_text(text)
        (directory / "prometheus.yaml").chmod(0o644)
        self.error = ""
        self._written = snapshot
        return True

    def reconcile(self, cluster: Cluster) -> None:
        if self.config_directory is None:
            return
        try:
            changed = self._write(cluster)
        except LocalRunError as error:
            cluster.log(f"prometheus: {error}")
            return
        if changed:
            address = self.address(cluster)
            if address:
                with contextlib.suppress(LocalRunError, OSError):
                    prometheus.PrometheusClient(f"http://{address}:9090").reload()

    def address(self, cluster: Cluster) -> str | None:
        for pod in list(cluster.pods.values()):
            if (
                pod.namespace == PROMETHEUS_NAMESPACE
                and pod.name.startswith(PROMETHEUS_NAME)
                and pod.ready
            ):
                return pod.ip
        return None


class KubeStateMetrics:
    """The series of kube-state-metrics the platform's rules read, from the run's own state:
    a stand-in served on the node address (the real one needs the Kubernetes API)."""

    def __init__(self, cluster: Cluster, address: str) -> None:
        self.cluster = cluster
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = stand_in.metrics().encode()
                self.send_response(200 if self.path.startswith("/metrics") else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def server_bind(self) -> None:  # no reverse DNS lookup of the address
                self.socket.bind(self.server_address)
                self.server_address = self.socket.getsockname()[:2]

        self.server = Server((address, 0), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="kube-state-metrics", daemon=True
        )
        self._thread.start()

    def metrics(self) -> str:
        lines = [
            "# TYPE kube_deployment_spec_replicas gauge",
            "# TYPE kube_deployment_status_replicas_available gauge",
            "# TYPE kube_pod_container_status_restarts_total counter",
            "# TYPE kube_pod_container_status_ready gauge",
        ]
        cluster = self.cluster
        for (namespace, name), state in sorted(cluster.deployments.items()):
            if state.workload.reference.kind != "Deployment":
                continue
            available = sum(1 for pod in state.pods if pod.ready)
            labels = f'namespace="{namespace}",deployment="{name}"'
            lines.append(f"kube_deployment_spec_replicas{{{labels}}} {state.workload.replicas}")
            lines.append(f"kube_deployment_status_replicas_available{{{labels}}} {available}")
        for pod in list(cluster.pods.values()):
            for container in pod.containers.values():
                labels = (
                    f'namespace="{pod.namespace}",pod="{pod.name}",container="{container.name}"'
                )
                lines.append(
                    f"kube_pod_container_status_restarts_total{{{labels}}} {container.restarts}"
                )
                lines.append(f"kube_pod_container_status_ready{{{labels}}} {int(container.ready)}")
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def chart_values(checkout: Path, value_files: Sequence[str]) -> dict[str, Any]:
    """A chart's values as Helm merges them: each file over the previous, maps deeply."""
    merged: dict[str, Any] = {}
    for reference in value_files:
        path = checkout / reference.removeprefix("$values/")
        document = yaml.safe_load(path.read_text()) if path.is_file() else None
        if isinstance(document, dict):
            _merge(merged, document)
    return merged


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value

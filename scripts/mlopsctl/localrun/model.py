"""What a workload asks for, in the terms the local run honours. Pure data, no behaviour.

Every value here comes from a rendered manifest (see `workloads`), already checked: a field the
run cannot honour never reaches these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Kubernetes' defaults (kubelet and API server), used where a manifest leaves a field out.
DEFAULT_PROBE_PERIOD_SECONDS = 10.0
DEFAULT_PROBE_TIMEOUT_SECONDS = 1.0
DEFAULT_PROBE_FAILURE_THRESHOLD = 3
DEFAULT_TERMINATION_GRACE_SECONDS = 30.0
DEFAULT_BACKOFF_LIMIT = 6


@dataclass(frozen=True)
class ObjectReference:
    """kind/namespace/name of a rendered object, as kubectl writes it, for messages."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return "/".join(part for part in (self.kind, self.namespace, self.name) if part)


@dataclass(frozen=True)
class ContainerPort:
    name: str | None
    number: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class HttpGet:
    path: str
    port: int
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TcpSocket:
    port: int


@dataclass(frozen=True)
class Exec:
    command: tuple[str, ...]


ProbeAction = HttpGet | TcpSocket | Exec


@dataclass(frozen=True)
class Probe:
    action: ProbeAction
    initial_delay_seconds: float = 0.0
    period_seconds: float = DEFAULT_PROBE_PERIOD_SECONDS
    timeout_seconds: float = DEFAULT_PROBE_TIMEOUT_SECONDS
    success_threshold: int = 1
    failure_threshold: int = DEFAULT_PROBE_FAILURE_THRESHOLD


@dataclass(frozen=True)
class Resources:
    """Requests and limits in base units: CPU in millicores, memory in bytes."""

    cpu_request_millis: int | None = None
    cpu_limit_millis: int | None = None
    memory_request_bytes: int | None = None
    memory_limit_bytes: int | None = None


@dataclass(frozen=True)
class KeyReference:
    """`configMapKeyRef` / `secretKeyRef`."""

    kind: Literal["ConfigMap", "Secret"]
    name: str
    key: str
    optional: bool = False


@dataclass(frozen=True)
class FieldReference:
    """`fieldRef`: metadata.name, metadata.namespace, status.podIP and the like."""

    field_path: str


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    reference: KeyReference | FieldReference | None = None


@dataclass(frozen=True)
class EnvFrom:
    """`envFrom`: every key of a ConfigMap or Secret, with an optional prefix."""

    kind: Literal["ConfigMap", "Secret"]
    name: str
    prefix: str = ""
    optional: bool = False


@dataclass(frozen=True)
class VolumeMount:
    volume: str
    path: str
    read_only: bool = False
    sub_path: str | None = None


@dataclass(frozen=True)
class KeyToPath:
    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True)
class Volume:
    name: str
    kind: Literal["emptyDir", "persistentVolumeClaim", "configMap", "secret"]
    # The claim, ConfigMap or Secret name; empty for emptyDir.
    source: str = ""
    size_limit_bytes: int | None = None
    memory_medium: bool = False
    items: tuple[KeyToPath, ...] = ()
    default_mode: int = 0o644
    optional: bool = False
    read_only: bool = False


@dataclass(frozen=True)
class SecurityContext:
    """The container's effective security settings (pod-level values merged in)."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool = False
    read_only_root_filesystem: bool = False
    allow_privilege_escalation: bool = True
    drop_all_capabilities: bool = False
    fs_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...] | None
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFrom, ...] = ()
    working_dir: str | None = None
    ports: tuple[ContainerPort, ...] = ()
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    resources: Resources = field(default_factory=Resources)
    security: SecurityContext = field(default_factory=SecurityContext)
    mounts: tuple[VolumeMount, ...] = ()

    def port_number(self, name_or_number: str | int) -> int | None:
        if isinstance(name_or_number, int):
            return name_or_number
        if name_or_number.isdigit():
            return int(name_or_number)
        for port in self.ports:
            if port.name == name_or_number:
                return port.number
        return None


@dataclass(frozen=True)
class PodTemplate:
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()
    volumes: tuple[Volume, ...] = ()
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    termination_grace_seconds: float = DEFAULT_TERMINATION_GRACE_SECONDS
    enable_service_links: bool = True
    service_account: str = "default"

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class Workload:
    """A Deployment, StatefulSet or Job: what makes pods, and how many."""

    reference: ObjectReference
    template: PodTemplate
    replicas: int = 1
    # Deployments: "RollingUpdate" starts the new pod before stopping the old; "Recreate" not.
    strategy: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    # Argo CD hook phase, for Jobs that are hooks ("PreSync", "PostSync", ...).
    hook: str | None = None
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT
    active_deadline_seconds: float | None = None

    @property
    def is_job(self) -> bool:
        return self.reference.kind == "Job"


@dataclass(frozen=True)
class ServicePort:
    name: str | None
    port: int
    # A number, or a container port's name, resolved per pod.
    target: str | int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Service:
    reference: ObjectReference
    selector: tuple[tuple[str, str], ...]
    ports: tuple[ServicePort, ...]
    labels: tuple[tuple[str, str], ...] = ()
    headless: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """The names a pod can use for this Service, as cluster DNS answers them."""
        name, namespace = self.reference.name, self.reference.namespace
        return (
            name,
            f"{name}.{namespace}",
            f"{name}.{namespace}.svc",
            f"{name}.{namespace}.svc.cluster.local",
        )


@dataclass(frozen=True)
class PodAddress:
    """What the network layers need to know of a running pod."""

    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...]
    ip: str
    ports: tuple[ContainerPort, ...]
    ready: bool = False

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def port_number(self, name_or_number: str | int) -> int | None:
        if isinstance(name_or_number, int):
            return name_or_number
        if name_or_number.isdigit():
            return int(name_or_number)
        for port in self.ports:
            if port.name == name_or_number:
                return port.number
        return None


def selects(selector: dict[str, str] | tuple[tuple[str, str], ...], labels: dict[str, str]) -> bool:
    """A plain equality selector (Service selectors, `matchLabels`) against a label set."""
    pairs = selector.items() if isinstance(selector, dict) else selector
    return all(labels.get(key) == value for key, value in pairs)

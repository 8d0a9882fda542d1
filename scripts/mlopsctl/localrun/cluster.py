"""The objects a run has applied, and the controllers that act on them: Deployments (rolling
updates and Recreate), Jobs (retries with back-off, deadlines), Services (VIPs and ready
endpoints, hosts files), NetworkPolicies (the nftables ruleset), and the operators' stand-ins
the sync installs (CloudNativePG, the Prometheus Operator).

One controller thread reconciles everything whenever something changed (a pod got ready, an
object was applied), and once a second anyway, as controllers resync.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.localrun import network_policy, workloads
from mlopsctl.localrun.cgroups import CgroupDriver
from mlopsctl.localrun.kubelet import Pod, RunnableImage
from mlopsctl.localrun.model import ObjectReference, Service, Workload, selects
from mlopsctl.localrun.network import RunNetwork, ServiceRule

Health = Literal["Healthy", "Progressing", "Degraded", "Missing", "Suspended"]
PROGRESS_DEADLINE_SECONDS = 600.0
JOB_BACKOFF_SECONDS = 10.0

# Kinds applied as they are, with no behaviour here: nothing in the run reads them.
WITHOUT_EFFECT = {
    "ServiceAccount": "no Kubernetes API in the run: nothing uses service accounts",
    "PodDisruptionBudget": "nothing evicts pods in the run",
}


class Operator(Protocol):
    """A stand-in for an operator the charts install: it owns some kinds."""

    kinds: tuple[str, ...]

    def apply(self, body: dict[str, Any], cluster: Cluster) -> None: ...

    def delete(self, reference: ObjectReference, cluster: Cluster) -> None: ...

    def health(self, reference: ObjectReference, cluster: Cluster) -> tuple[Health, str]: ...

    def reconcile(self, cluster: Cluster) -> None: ...


class ImageSource(Protocol):
    def image(self, reference: str, resource: ObjectReference, field: str) -> RunnableImage: ...


@dataclass
class Applied:
    body: dict[str, Any]
    application: str


@dataclass
class DeploymentState:
    workload: Workload
    template_hash: str
    pods: list[Pod] = field(default_factory=list)
    progressing_since: float = field(default_factory=time.time)
    # StatefulSet-like pods with stable names (an operator's instances), else generated names.
    fixed_names: tuple[str, ...] = ()


@dataclass
class JobState:
    workload: Workload
    pods: list[Pod] = field(default_factory=list)
    failures: int = 0
    status: Literal["Running", "Complete", "Failed"] = "Running"
    message: str = ""
    started: float = field(default_factory=time.time)
    next_attempt: float = 0.0


def template_hash(workload: Workload) -> str:
    text = json.dumps(workload.template, default=lambda o: o.__dict__, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _suffix() -> str:
    return "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


class Cluster:
    """What the run holds; also the `PodEnvironment` its pods ask."""

    def __init__(
        self,
        run_id: str,
        state_directory: Path,
        network: RunNetwork,
        cgroups: CgroupDriver,
        images: ImageSource,
        ca_bundle: Path | None,
        log: Callable[[str], None],
        extra_hosts: Mapping[str, str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.state_directory = state_directory
        self.network = network
        self.cgroups = cgroups
        self.images = images
        self.ca_bundle = ca_bundle
        self.log = log
        self.extra_hosts = dict(extra_hosts or {})
        self.objects: dict[tuple[str, str, str], Applied] = {}
        self.services: dict[tuple[str, str], tuple[Service, str]] = {}
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.pods: dict[str, Pod] = {}
        self.deployments: dict[tuple[str, str], DeploymentState] = {}
        self.jobs: dict[tuple[str, str], JobState] = {}
        self.operators: dict[str, Operator] = {}
        self.notes: list[str] = []
        self.change_listeners: list[Callable[[], None]] = []
        self._lock = threading.RLock()
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._applied_rules: tuple[str, str] = ("", "")
        # Ready pods whose readiness the Service and policy rules in force were made from.
        self._routed_pods: frozenset[tuple[str, str]] = frozenset()
        self._policy_error = ""

    # -- PodEnvironment ------------------------------------------------------------------------

    def config_data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        applied = self.objects.get((kind, namespace, name))
        if applied is None:
            return None
        body = applied.body
        if kind == "Secret":
            data = {
                key: base64.b64decode(value).decode("utf-8", "replace")
                for key, value in (body.get("data") or {}).items()
            }
            data.update({key: str(value) for key, value in (body.get("stringData") or {}).items()})
            return data
        return {key: str(value) for key, value in (body.get("data") or {}).items()}

    def service_links(self, namespace: str) -> dict[str, str]:
        with self._lock:
            pairs = [
                (service, address)
                for (ns, _), (service, address) in self.services.items()
                if ns == namespace
            ]
        return workloads.service_environment(pairs)

    def hosts_file(self, namespace: str, pod_name: str, pod_address: str) -> str:
        lines = [
            "# Kubernetes-managed hosts file (written by the local run, as cluster DNS answers).",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            f"{pod_address}\t{pod_name}",
        ]
        with self._lock:
            for (service_namespace, _), (service, address) in sorted(self.services.items()):
                if service.headless:
                    continue
                names = service.names if service_namespace == namespace else service.names[1:]
                lines.append(f"{address}\t{' '.join(names)}")
        for name, address in sorted(self.extra_hosts.items()):
            lines.append(f"{address}\t{name}")
        return "\n".join(lines) + "\n"

    def image(self, reference: str, resource: ObjectReference, field: str) -> RunnableImage:
        return self.images.image(reference, resource, field)

    def claim_directory(self, namespace: str, claim: str, resource: ObjectReference) -> Path:
        if ("PersistentVolumeClaim", namespace, claim) not in self.objects:
            raise LocalRunError(f'{resource}: persistentvolumeclaim "{claim}" not found')
        directory = self.state_directory / "volumes" / namespace / claim
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def pod_changed(self, pod: Pod) -> None:
        self._changed.set()

    # -- applying and deleting -----------------------------------------------------------------

    def apply(self, body: dict[str, Any], application: str) -> None:
        """Create or update one object, as `kubectl apply` would (Argo CD applies this way)."""
        reference = workloads.reference_of(body)
        kind = reference.kind
        key = (kind, reference.namespace, reference.name)
        with self._lock:
            previous = self.objects.get(key)
            if kind in self.operators:
                self.operators[kind].apply(body, self)
            elif kind == "Namespace":
                labels = dict((body.get("metadata") or {}).get("labels") or {})
                labels["kubernetes.io/metadata.name"] = reference.name
                self.namespace_labels[reference.name] = {str(k): str(v) for k, v in labels.items()}
            elif kind in ("ConfigMap", "Secret", "NetworkPolicy", "PersistentVolumeClaim"):
                if kind == "NetworkPolicy":
                    network_policy.parse_network_policy(body)  # refuses what it cannot honour
            elif kind == "Service":
                service = workloads.service(body)
                address = self.services.get((reference.namespace, reference.name), (None, ""))[1]
                self.services[(reference.namespace, reference.name)] = (
                    service,
                    address or self.network.allocate_service_address(),
                )
            elif kind in ("Deployment", "StatefulSet"):
                workload = workloads.workload(body)
                self._apply_deployment(workload)
            elif kind == "Job":
                workload = workloads.workload(body)
                if previous is not None and (reference.namespace, reference.name) in self.jobs:
                    raise UnsupportedManifest(
                        reference,
                        "spec.template",
                        "a Job's template cannot change (delete it first)",
                    )
                self.jobs[(reference.namespace, reference.name)] = JobState(workload)
            elif kind in WITHOUT_EFFECT:
                pass
            else:
                raise UnsupportedManifest(
                    reference,
                    "kind",
                    f"{body.get('apiVersion')} {kind} is not supported by the local run",
                )
            self.objects[key] = Applied(body, application)
        self._changed.set()

    def delete(self, kind: str, namespace: str, name: str, wait: bool = False) -> None:
        reference = ObjectReference(kind, namespace, name)
        stopping: list[Pod] = []
        with self._lock:
            self.objects.pop((kind, namespace, name), None)
            if kind in self.operators:
                self.operators[kind].delete(reference, self)
            elif kind == "Service":
                self.services.pop((namespace, name), None)
            elif kind in ("Deployment", "StatefulSet"):
                state = self.deployments.pop((namespace, name), None)
                stopping = state.pods if state else []
            elif kind == "Job":
                job = self.jobs.pop((namespace, name), None)
                stopping = job.pods if job else []
        for pod in stopping:
            self._remove_pod(pod, wait=wait)
        self._changed.set()

    def apply_workload(
        self, workload: Workload, application: str, fixed_names: tuple[str, ...] = ()
    ) -> None:
        """A workload an operator stand-in makes (not a rendered manifest)."""
        reference = workload.reference
        with self._lock:
            self._apply_deployment(workload, fixed_names)
            self.objects[(reference.kind, reference.namespace, reference.name)] = Applied(
                {
                    "kind": reference.kind,
                    "metadata": {"name": reference.name, "namespace": reference.namespace},
                },
                application,
            )
        self._changed.set()

    def ensure_namespace(self, name: str) -> None:
        """As Argo CD's CreateNamespace=true does for an Application's destination."""
        with self._lock:
            if name not in self.namespace_labels:
                self.namespace_labels[name] = {"kubernetes.io/metadata.name": name}
                self.objects[("Namespace", "", name)] = Applied(
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, ""
                )

    def _apply_deployment(self, workload: Workload, fixed_names: tuple[str, ...] = ()) -> None:
        key = (workload.reference.namespace, workload.reference.name)
        digest = template_hash(workload)
        state = self.deployments.get(key)
        if state is None:
            self.deployments[key] = DeploymentState(workload, digest, fixed_names=fixed_names)
        elif state.template_hash != digest or state.workload.replicas != workload.replicas:
            if state.template_hash != digest:
                state.progressing_since = time.time()
            state.workload, state.template_hash = workload, digest

    # -- health, as Argo CD reads it -----------------------------------------------------------

    def health(self, kind: str, namespace: str, name: str) -> tuple[Health, str]:
        reference = ObjectReference(kind, namespace, name)
        with self._lock:
            if (kind, namespace, name) not in self.objects:
                return "Missing", "not applied"
            if kind in self.operators:
                return self.operators[kind].health(reference, self)
            if kind in ("Deployment", "StatefulSet"):
                return self._deployment_health(self.deployments[(namespace, name)])
            if kind == "Job":
                job = self.jobs.get((namespace, name))
                if job is None:
                    return "Missing", "not applied"
                if job.status == "Complete":
                    return "Healthy", "complete"
                if job.status == "Failed":
                    return "Degraded", job.message
                return "Progressing", job.message or "running"
        return "Healthy", ""

    def _deployment_health(self, state: DeploymentState) -> tuple[Health, str]:
        wanted = state.workload.replicas
        current = [
            pod for pod in state.pods if pod.owner_hash == state.template_hash and not pod.deleting
        ]
        # Ready once its Services send to it: a client started by the next wave (which waits for
        # this Healthy) would otherwise be refused by a VIP the rules do not route yet.
        ready = [
            pod
            for pod in current
            if pod.ready
            and (pod.endpoint is None or (pod.namespace, pod.name) in self._routed_pods)
        ]
        old = [pod for pod in state.pods if pod.owner_hash != state.template_hash]
        if len(ready) >= wanted and not old:
            return "Healthy", f"{len(ready)}/{wanted} ready"
        trouble = [
            f"{pod.name}: {pod.summary()}"
            for pod in current
            if pod.summary() not in ("Running", "NotReady", "Pending")
        ]
        message = f"{len(ready)}/{wanted} ready" + (f" ({'; '.join(trouble)})" if trouble else "")
        if time.time() - state.progressing_since > PROGRESS_DEADLINE_SECONDS:
            return "Degraded", f"progress deadline exceeded: {message}"
        return "Progressing", message

    # -- the controller loop -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="controllers", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._changed.wait(1.0)
            self._changed.clear()
            if self._stopping.is_set():
                return
            try:
                self.reconcile()
            except Exception as error:  # a controller must outlive one bad pass
                self.log(f"controllers: {type(error).__name__}: {error}")

    def reconcile(self) -> None:
        with self._lock:
            deployments = list(self.deployments.values())
            jobs = list(self.jobs.values())
            operators = list(self.operators.values())
        for deployment in deployments:
            self._reconcile_deployment(deployment)
        for job in jobs:
            self._reconcile_job(job)
        for operator in operators:
            operator.reconcile(self)
        self._update_network()
        for listener in self.change_listeners:
            listener()

    def _new_pod(self, name: str, workload: Workload, owner_hash: str) -> Pod:
        pod = Pod(name, workload.reference.namespace, workload.reference, workload.template, self)
        pod.owner_hash = owner_hash
        with self._lock:
            self.pods[name] = pod
        pod.start()
        return pod

    def _remove_pod(self, pod: Pod, wait: bool = False) -> None:
        def stop() -> None:
            pod.stop()
            with self._lock:
                self.pods.pop(pod.name, None)
            self._changed.set()

        pod.deleting = True
        if wait:
            stop()
        else:
            threading.Thread(target=stop, name=f"stop-{pod.name}", daemon=True).start()

    def _reconcile_deployment(self, state: DeploymentState) -> None:
        workload = state.workload
        with self._lock:
            state.pods = [pod for pod in state.pods if pod.name in self.pods]
            live = [pod for pod in state.pods if not pod.deleting]
        current = [pod for pod in live if pod.owner_hash == state.template_hash]
        old = [pod for pod in live if pod.owner_hash != state.template_hash]
        for pod in current:
            if pod.phase == "Failed":
                self._remove_pod(pod)
        current = [pod for pod in current if pod.phase != "Failed"]
        if workload.strategy == "Recreate" and old:
            for pod in old:
                self._remove_pod(pod)
            return
        if workload.strategy == "Recreate" and any(pod.deleting for pod in state.pods):
            return  # every old pod is gone before a new one starts
        wanted = workload.replicas
        if len(current) < wanted and (
            workload.strategy == "Recreate" or len(current) + len(old) < wanted + 1
        ):
            if state.fixed_names:
                taken = {pod.name for pod in state.pods}
                free = [name for name in state.fixed_names if name not in taken]
                if not free:
                    return
                name = free[0]
            else:
                name = f"{workload.reference.name}-{state.template_hash[:10]}-{_suffix()}"
            state.pods.append(self._new_pod(name, workload, state.template_hash))
        elif len(current) > wanted:
            for pod in current[wanted:]:
                self._remove_pod(pod)
        ready = [pod for pod in current if pod.ready]
        # Rolling update, maxSurge 1 / maxUnavailable 0: an old pod goes once a new one serves.
        for pod in old[: max(0, len(ready) + len(old) - wanted)]:
            self._remove_pod(pod)

    def _reconcile_job(self, job: JobState) -> None:
        if job.status != "Running":
            return
        workload = job.workload
        deadline = workload.active_deadline_seconds
        if deadline is not None and time.time() - job.started > deadline:
            job.status, job.message = (
                "Failed",
                "DeadlineExceeded: the Job was active longer than specified",
            )
            for pod in job.pods:
                if not pod.deleting and pod.phase in ("Pending", "Running"):
                    self._remove_pod(pod)
            return
        active = [
            pod for pod in job.pods if pod.phase in ("Pending", "Running") and not pod.deleting
        ]
        if any(pod.phase == "Succeeded" for pod in job.pods):
            job.status, job.message = "Complete", ""
            return
        failed = [pod for pod in job.pods if pod.phase == "Failed"]
        if len(failed) > job.failures:
            job.failures = len(failed)
            last = failed[-1]
            reasons = [
                f"{s.name}: {s.reason} {s.message}".strip() for s in last.containers.values()
            ]
            job.message = f"pod {last.name} failed ({'; '.join(reasons)})"
            if job.failures > workload.backoff_limit:
                job.status = "Failed"
                job.message = f"BackoffLimitExceeded: {job.message}"
                return
            job.next_attempt = time.time() + JOB_BACKOFF_SECONDS * 2 ** (job.failures - 1)
        if not active and time.time() >= job.next_attempt:
            name = f"{workload.reference.name}-{_suffix()}"
            job.pods.append(self._new_pod(name, workload, ""))

    # -- Services, hosts files, NetworkPolicies ------------------------------------------------

    def pod_addresses(self) -> list[Any]:
        with self._lock:
            return [pod.address() for pod in self.pods.values() if pod.endpoint is not None]

    def _update_network(self) -> None:
        addresses = self.pod_addresses()
        rules: list[ServiceRule] = []
        with self._lock:
            services = list(self.services.items())
            policies = [
                a.body for (kind, _, _), a in self.objects.items() if kind == "NetworkPolicy"
            ]
        for (namespace, _), (service, address) in services:
            for port in service.ports:
                backends = tuple(
                    sorted(
                        (pod.ip, number)
                        for pod in addresses
                        if pod.ready
                        and pod.namespace == namespace
                        and service.selector
                        and selects(service.selector, pod.label_map)
                        and (number := pod.port_number(port.target)) is not None
                    )
                )
                rules.append(ServiceRule(address, port.port, port.protocol, backends))
        service_text = json.dumps([rule.__dict__ for rule in rules], sort_keys=True, default=list)
        flows = network_policy.allowed_flows(policies, addresses, self.namespace_labels)
        policy_text = network_policy.nftables_ruleset(
            self.network.table,
            flows,
            addresses,
            pod_cidr=str(self.network.pod_network),
            run_hosts_cidr=str(self.network.host_network),
            node_address=self.network.node_address,
            service_cidr=str(self.network.service_network),
        )
        if service_text != self._applied_rules[0]:
            self.network.set_services(rules)
        if policy_text != self._applied_rules[1]:
            self.network.set_policy(policy_text)
        if (service_text, policy_text) != self._applied_rules:
            with self._lock:
                pods = list(self.pods.values())
            for pod in pods:
                with contextlib.suppress(OSError):
                    pod.refresh_hosts_file()
        self._applied_rules = (service_text, policy_text)
        routed = frozenset(
            (address.namespace, address.name) for address in addresses if address.ready
        )
        with self._lock:
            self._routed_pods = routed

    def ready_pod_namespace(self, namespace: str, service_name: str) -> str | None:
        """A ready pod behind a Service, for port-forwards. A Service without a selector has
        none (kubectl refuses to forward to it), as it has no endpoints."""
        with self._lock:
            entry = self.services.get((namespace, service_name))
            if entry is None or not entry[0].selector:
                return None
            service = entry[0]
            for pod in self.pods.values():
                if (
                    pod.ready
                    and pod.namespace == namespace
                    and pod.endpoint
                    and selects(service.selector, pod.template.label_map)
                ):
                    return pod.endpoint.namespace_path
        return None

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            pods = list(self.pods.values())
        stoppers = [threading.Thread(target=pod.stop, daemon=True) for pod in pods]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=180)

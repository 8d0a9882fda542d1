"""`mlopsctl status --live`: a pin's whole way from the registry to running pods, in one state.
Pure: a status row (MLflow's alias against Git's pin), what the cluster says, and whether Argo
CD's synced revision contains the pin's last commit, in; one row out.

The states follow Argo CD's own fields rather than guesses: the Application's sync status, its
last operation's phase, its health status, and the revision it synced; then the model server's
Deployment: the version its pod template pins (from the pinned ConfigMap) and its rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlopsctl.promote.pin_status import StatusRow

IN_STEP = "in step"
UNREACHABLE = "cluster unreachable"
REFUSED = "cluster refused"  # it answered, but not with what was asked (forbidden, say)
NO_APPLICATION = "no application"
SYNC_FAILED = "sync failed"
OUT_OF_SYNC = "out of sync"
GIT_AHEAD = "git ahead of cluster"
DEGRADED = "degraded"
ROLLING_OUT = "rolling out"
OLD_VERSION = "pods on old version"
PROGRESSING = "progressing"


@dataclass(frozen=True)
class ApplicationState:
    """What Argo CD's controller writes in an Application's status."""

    name: str
    sync_status: str  # Synced, OutOfSync, Unknown
    synced_revision: str
    health: str  # Healthy, Progressing, Degraded, Suspended, Missing, Unknown
    health_since: str
    operation_phase: str  # Running, Succeeded, Failed, Error, Terminating; "" before any
    operation_message: str

    @staticmethod
    def of(body: dict[str, Any]) -> ApplicationState:
        status = body.get("status") or {}
        sync = status.get("sync") or {}
        health = status.get("health") or {}
        operation = status.get("operationState") or {}
        return ApplicationState(
            name=str((body.get("metadata") or {}).get("name", "")),
            sync_status=str(sync.get("status", "Unknown")),
            synced_revision=str(sync.get("revision", "")),
            health=str(health.get("status", "Unknown")),
            health_since=str(health.get("lastTransitionTime", "")),
            operation_phase=str(operation.get("phase", "")),
            operation_message=str(operation.get("message", "")),
        )


@dataclass(frozen=True)
class ServedState:
    """The model server's Deployment: the versions its pod template pins (model name ->
    version), and its rollout."""

    versions: dict[str, str]
    replicas: int  # desired (spec)
    ready_replicas: int
    updated_replicas: int
    observed: bool  # the controller has seen the newest template (observedGeneration)
    current_replicas: int = 0  # every pod the Deployment has, old template included (status)
    available_replicas: int = 0

    @property
    def rolled_out(self) -> bool:
        """kubectl rollout status's rule: every desired pod runs the newest template, no pod of an
        older one is left, and every updated pod is available."""
        return (
            self.observed
            and self.updated_replicas >= self.replicas
            and self.current_replicas <= self.updated_replicas
            and self.available_replicas >= self.updated_replicas
            and self.ready_replicas > 0
        )


@dataclass(frozen=True)
class ClusterView:
    """One environment's cluster, as read; `error` says why it could not be."""

    error: str = ""
    refused: bool = False  # the API server answered the read with an error status
    application: ApplicationState | None = None
    served: ServedState | None = None


@dataclass(frozen=True)
class LiveRow:
    environment: str
    model: str
    alias: str
    mlflow: str  # the version behind the alias ("-" when none)
    git: str  # the pin in Git on the branch Argo CD follows
    sync: str
    revision: str
    health: str
    operation: str
    commit: str  # the last commit that changed the pin, on the branch Argo CD follows
    contains_promotion: bool | None
    served: str  # the version the running pods serve ("-" when unknown)
    ready: str  # ready/desired replicas
    state: str
    detail: str

    @property
    def in_step(self) -> bool:
        return self.state == IN_STEP


def live_row(
    row: StatusRow, cluster: ClusterView, commit: str, contains_promotion: bool | None
) -> LiveRow:
    application, served = cluster.application, cluster.served
    state, detail = _state(row, cluster, contains_promotion)
    return LiveRow(
        environment=row.environment,
        model=row.model,
        alias=row.alias,
        mlflow=row.desired or "-",
        git=row.pinned,
        sync=application.sync_status if application else "-",
        revision=application.synced_revision[:12] if application else "-",
        health=application.health if application else "-",
        operation=application.operation_phase or "-" if application else "-",
        commit=commit,
        contains_promotion=contains_promotion,
        served=served.versions.get(row.model, "-") if served else "-",
        ready=f"{served.ready_replicas}/{served.replicas}" if served else "-",
        state=state,
        detail=detail,
    )


def _state(
    row: StatusRow, cluster: ClusterView, contains_promotion: bool | None
) -> tuple[str, str]:
    if cluster.error:
        return (REFUSED if cluster.refused else UNREACHABLE), cluster.error
    if not row.in_step:
        return row.state, "the pin in Git is not what the alias names (see `mlopsctl status`)"
    application = cluster.application
    if application is None:
        return NO_APPLICATION, "no Argo CD Application deploys this environment's model server"
    if application.operation_phase in ("Failed", "Error"):
        return SYNC_FAILED, application.operation_message
    if application.sync_status != "Synced":
        return OUT_OF_SYNC, f"Argo CD says {application.sync_status}"
    if contains_promotion is False:
        return GIT_AHEAD, (
            f"synced revision {application.synced_revision[:12]} does not contain the pin's "
            "last commit"
        )
    if application.health == "Degraded":
        return DEGRADED, f"Degraded since {application.health_since or 'unknown'}"
    served = cluster.served
    if served is None:
        return OLD_VERSION, "no model server Deployment"
    version = served.versions.get(row.model)
    if version != row.pinned:
        return (
            OLD_VERSION,
            f"the pods serve {version or f'no version of {row.model}'}, Git pins {row.pinned}",
        )
    if not served.rolled_out:
        older = served.current_replicas - served.updated_replicas
        return ROLLING_OUT, (
            f"{served.updated_replicas}/{served.replicas} updated, {served.ready_replicas} ready"
            + (f", {older} from an older template" if older > 0 else "")
        )
    if application.health != "Healthy":
        return PROGRESSING, f"Argo CD says {application.health}"
    return IN_STEP, ""

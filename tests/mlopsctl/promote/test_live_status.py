"""mlopsctl.promote.live_status: one pin's way from the registry to running pods, in one
state, from a status row, a cluster view and whether the synced revision holds the pin."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mlopsctl.promote import live_status
from mlopsctl.promote.live_status import (
    ApplicationState,
    ClusterView,
    ServedState,
    live_row,
)
from mlopsctl.promote.pin_status import BEHIND, IN_SYNC, StatusRow


def a_row(state: str = IN_SYNC, pinned: str = "3", desired: str | None = "3") -> StatusRow:
    return StatusRow(
        environment="prod",
        model="iris",
        alias="production",
        pinned=pinned,
        desired=desired,
        state=state,
        run_id="run-3",
        file="overlays/prod/model-server/kustomization.yaml",
        line=7,
        files=(),
    )


APPLICATION_BODY: dict[str, Any] = {
    "metadata": {"name": "model-server-prod"},
    "status": {
        "sync": {"status": "Synced", "revision": "0123456789abcdef0123"},
        "health": {"status": "Healthy", "lastTransitionTime": "2026-12-01T10:00:00Z"},
        "operationState": {"phase": "Succeeded", "message": "successfully synced"},
    },
}
APPLICATION = ApplicationState.of(APPLICATION_BODY)
SERVED = ServedState(
    versions={"iris": "3"},
    replicas=2,
    ready_replicas=2,
    updated_replicas=2,
    observed=True,
    current_replicas=2,
    available_replicas=2,
)


def a_view(**changes: Any) -> ClusterView:
    return ClusterView(application=APPLICATION, served=SERVED, **changes)


def test_application_state_reads_argo_cd_status_fields() -> None:
    expected = ApplicationState(
        name="model-server-prod",
        sync_status="Synced",
        synced_revision="0123456789abcdef0123",
        health="Healthy",
        health_since="2026-12-01T10:00:00Z",
        operation_phase="Succeeded",
        operation_message="successfully synced",
    )
    assert expected == APPLICATION


def test_application_state_of_an_empty_body_is_unknown() -> None:
    empty = ApplicationState.of({"status": None})
    assert (empty.name, empty.sync_status, empty.health, empty.operation_phase) == (
        "",
        "Unknown",
        "Unknown",
        "",
    )


def test_everything_in_step_gives_one_in_step_row() -> None:
    row = live_row(a_row(), a_view(), "abc1234", True)

    assert row.in_step
    assert (row.state, row.detail) == (live_status.IN_STEP, "")
    assert (row.mlflow, row.git, row.served, row.ready) == ("3", "3", "3", "2/2")
    assert (row.sync, row.revision, row.health, row.operation) == (
        "Synced",
        "0123456789ab",
        "Healthy",
        "Succeeded",
    )


def test_an_unreadable_cluster_says_unreachable_or_refused() -> None:
    unreachable = live_row(a_row(), ClusterView(error="connection refused"), "c", None)
    refused = live_row(a_row(), ClusterView(error="403 forbidden", refused=True), "c", None)

    assert (unreachable.state, unreachable.detail) == (
        live_status.UNREACHABLE,
        "connection refused",
    )
    assert (refused.state, refused.detail) == (live_status.REFUSED, "403 forbidden")
    assert (refused.sync, refused.served, refused.ready) == ("-", "-", "-")


def test_a_pin_behind_its_alias_keeps_the_status_state() -> None:
    row = live_row(a_row(BEHIND, pinned="2"), a_view(), "c", True)
    assert row.state == BEHIND
    assert not row.in_step


def with_application(**changes: Any) -> ClusterView:
    return ClusterView(application=dataclasses.replace(APPLICATION, **changes), served=SERVED)


def with_served(**changes: Any) -> ClusterView:
    return ClusterView(application=APPLICATION, served=dataclasses.replace(SERVED, **changes))


@pytest.mark.parametrize(
    ("view", "contains_promotion", "state", "detail"),
    [
        (ClusterView(), True, live_status.NO_APPLICATION, "no Argo CD Application"),
        (
            with_application(operation_phase="Failed", operation_message="hook failed"),
            True,
            live_status.SYNC_FAILED,
            "hook failed",
        ),
        (with_application(sync_status="OutOfSync"), True, live_status.OUT_OF_SYNC, "OutOfSync"),
        (a_view(), False, live_status.GIT_AHEAD, "0123456789ab does not contain"),
        (with_application(health="Degraded"), True, live_status.DEGRADED, "Degraded since 2026"),
        (ClusterView(application=APPLICATION), True, live_status.OLD_VERSION, "no model server"),
        (
            with_served(versions={"iris": "2"}),
            True,
            live_status.OLD_VERSION,
            "the pods serve 2, Git pins 3",
        ),
        (
            with_served(versions={}),
            True,
            live_status.OLD_VERSION,
            "the pods serve no version of iris",
        ),
        (
            with_served(updated_replicas=1, current_replicas=3, ready_replicas=2),
            True,
            live_status.ROLLING_OUT,
            "1/2 updated, 2 ready, 2 from an older template",
        ),
        (with_served(observed=False), True, live_status.ROLLING_OUT, "2/2 updated, 2 ready"),
        (with_application(health="Progressing"), True, live_status.PROGRESSING, "Progressing"),
        (a_view(), None, live_status.IN_STEP, ""),
    ],
)
def test_the_first_thing_out_of_step_names_the_state(
    view: ClusterView, contains_promotion: bool | None, state: str, detail: str
) -> None:
    row = live_row(a_row(), view, "c", contains_promotion)
    assert row.state == state
    assert detail in row.detail
    assert row.in_step == (state == live_status.IN_STEP)


@pytest.mark.parametrize(
    ("changes", "rolled_out"),
    [
        ({}, True),
        ({"observed": False}, False),
        ({"updated_replicas": 1}, False),
        ({"current_replicas": 3}, False),
        ({"available_replicas": 1}, False),
        ({"ready_replicas": 0}, False),
    ],
)
def test_rolled_out_follows_kubectl_rollout_status(
    changes: dict[str, Any], rolled_out: bool
) -> None:
    assert dataclasses.replace(SERVED, **changes).rolled_out is rolled_out

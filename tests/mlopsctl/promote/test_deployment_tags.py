"""The deployment tags' plan: which versions get deployed.<env>, which lose it, and when nothing
may move."""

from __future__ import annotations

from dataclasses import replace

from mlopsctl.promote.deployment_tags import TagChange, plan
from mlopsctl.promote.live_status import IN_STEP, REFUSED, ROLLING_OUT, UNREACHABLE, LiveRow

NOW = "2026-12-02T12:00:00+00:00"
EARLIER = "2026-11-30T08:00:00+00:00"


def row(model: str, served: str, commit: str, state: str = IN_STEP, alias: str = "champion"):
    return LiveRow(
        environment="staging",
        model=model,
        alias=alias,
        mlflow=served,
        git=served,
        sync="Synced",
        revision=commit[:12],
        health="Healthy",
        operation="Succeeded",
        commit=commit,
        contains_promotion=True,
        served=served,
        ready="1/1",
        state=state,
        detail="",
    )


def deployed(commit: str) -> dict[str, str]:
    return {"deployed.staging": commit, "deployed.staging.since": EARLIER}


def test_a_version_newly_live_gets_the_commit_and_the_time():
    assert plan("staging", [row("iris", "3", "c3")], {}, NOW) == [
        TagChange("iris", "3", "deployed.staging.since", NOW),
        TagChange("iris", "3", "deployed.staging", "c3"),
    ]


def test_a_version_already_tagged_keeps_its_commit_and_time():
    assert plan("staging", [row("iris", "3", "c3")], {("iris", "3"): deployed("c3")}, NOW) == []
    # A later commit to the pin's file (an image tag, say) does not deploy the version again.
    assert plan("staging", [row("iris", "3", "c9")], {("iris", "3"): deployed("c3")}, NOW) == []


def test_nothing_moves_without_proof_that_the_synced_revision_has_the_pin():
    unproven = replace(row("iris", "4", "c4"), contains_promotion=None)
    assert plan("staging", [unproven], {("iris", "3"): deployed("c3")}, NOW) == []


def test_the_version_replaced_loses_both_tags():
    changes = plan("staging", [row("iris", "4", "c4")], {("iris", "3"): deployed("c3")}, NOW)
    assert changes == [
        TagChange("iris", "4", "deployed.staging.since", NOW),
        TagChange("iris", "4", "deployed.staging", "c4"),
        TagChange("iris", "3", "deployed.staging.since", None),
        TagChange("iris", "3", "deployed.staging", None),
    ]


def test_nothing_moves_for_a_model_still_rolling_out():
    rows = [row("iris", "3", "c4", state=ROLLING_OUT), row("wine", "2", "w2")]
    tagged = {("iris", "3"): deployed("c3"), ("wine", "1"): deployed("w1")}
    changes = plan("staging", rows, tagged, NOW)
    assert {change.model for change in changes} == {"wine"}


def test_two_aliases_of_one_model_keep_both_versions_tagged():
    rows = [row("iris", "3", "c3"), row("iris", "4", "c4", alias="challenger")]
    tagged = {("iris", "3"): deployed("c3"), ("iris", "4"): deployed("c4")}
    assert plan("staging", rows, tagged, NOW) == []


def test_a_model_no_longer_pinned_is_untagged():
    changes = plan("staging", [row("wine", "2", "w2")], {("iris", "3"): deployed("c3")}, NOW)
    assert TagChange("iris", "3", "deployed.staging", None) in changes


def test_nothing_moves_when_the_cluster_cannot_be_read():
    for state in (UNREACHABLE, REFUSED):
        rows = [row("iris", "4", "c4"), row("wine", "2", "w2", state=state)]
        assert plan("staging", rows, {("old", "1"): deployed("o1")}, NOW) == []


def test_other_environments_rows_are_ignored():
    other = replace(row("iris", "9", "c9"), environment="production")
    changes = plan("staging", [other], {("iris", "3"): deployed("c3")}, NOW)
    assert changes == [
        TagChange("iris", "3", "deployed.staging.since", None),
        TagChange("iris", "3", "deployed.staging", None),
    ]

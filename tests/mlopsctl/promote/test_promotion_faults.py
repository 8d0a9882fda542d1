"""Promotions that cannot go wrong: each fault the review reproduced, against a real MLflow
server and real bare git remotes.

- a push rejected because another writer landed first is planned again from the new head;
- one bad item (a model name git refuses as a branch, a failed registry read) fails alone;
- a pull request no longer wanted is withdrawn; one a person closed stays closed;
- notWorseThan fails closed when the pinned version cannot be read.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from mlopsctl.base import inventory, toolchain
from mlopsctl.base.config import load_config
from mlopsctl.base.errors import MlopsctlError, RegistryError
from mlopsctl.base.registry import MlflowRegistry, ModelVersion
from mlopsctl.promote import flows
from mlopsctl.promote.landing import OutcomeKind, Report
from mlopsctl.validate.engine import edit_findings
from tests.support.github_standin import REPOSITORY, TOKEN, GitHubStandIn
from tests.support.mlflow_fixtures import MlflowServer
from tests.support.paths import TOOLS_DIR
from tests.support.platform_fixtures import Platform, git, start_pinned_at

LOCAL_MODEL_SERVER = "overlays/local/model-server/kustomization.yaml"


class InterposedRegistry:
    """The real registry behind the `Registry` protocol, with a hook after each alias read:
    where a test makes another writer act between this writer's plan and its push."""

    def __init__(self, real: MlflowRegistry, after_alias_read: Callable[[int], None]) -> None:
        self.real = real
        self.base_url = real.base_url
        self.alias_reads = 0
        self.after_alias_read = after_alias_read
        self.failing_signatures: set[str] = set()

    def version_by_alias(self, model: str, alias: str) -> ModelVersion | None:
        answer = self.real.version_by_alias(model, alias)
        self.alias_reads += 1
        self.after_alias_read(self.alias_reads)
        return answer

    def version(self, model: str, version: str) -> ModelVersion | None:
        return self.real.version(model, version)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return self.real.run_metrics(run_id)

    def signature(self, model: str, version: str) -> dict[str, Any] | None:
        if model in self.failing_signatures:
            raise RegistryError(f"{model} v{version}: reading MLmodel failed: connection reset")
        return self.real.signature(model, version)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.real.set_alias(model, alias, version)


def promote_in_process(
    platform: Platform, registry: Any, environment: str, **landing: Any
) -> Report:
    return flows.run(
        None,
        registry,
        toolchain.resolve(TOOLS_DIR),
        str(platform.remote),
        flows.Landing(log=lambda _line: None, validator=edit_findings, **landing),
        environment=environment,
    )


def promote_in_another_process(
    platform: Platform, server: MlflowServer, environment: str, check: bool = True
) -> None:
    """Another writer (a second promoter, the scheduled workflow) runs to completion."""
    subprocess.run(
        platform.promote_argv(server.url, environment),
        check=check,
        capture_output=True,
    )


def test_a_rejected_push_is_planned_again_from_the_new_head(
    platform: Platform, mlflow_server: MlflowServer
):
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    start_pinned_at(platform, "1")
    second = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    newer: list[str] = []

    def another_writer_lands_a_newer_version(reads: int) -> None:
        if reads == 1:  # this writer has read v2; before it pushes, v3 is promoted and lands
            newer.append(
                mlflow_server.register(platform.model, {"accuracy": 0.97}, alias="challenger")
            )
            promote_in_another_process(platform, mlflow_server, "local")

    registry = InterposedRegistry(
        MlflowRegistry(mlflow_server.url), another_writer_lands_a_newer_version
    )
    report = promote_in_process(platform, registry, "local")

    assert report.ok
    # Replaying the old edit would have taken main back down to v2 with a false subject.
    assert platform.pin("local") == newer[0]
    promotions = [s for s in platform.log() if s.startswith("promote(local)")]
    assert promotions == [f"promote(local): {platform.model} v1 -> v{newer[0]}"]
    assert f"v{second}" not in " ".join(promotions)
    assert registry.alias_reads >= 2  # the registry was asked again after the rejection


def test_a_rejected_proposal_is_planned_again_and_does_not_undo_a_newer_one(
    platform: Platform, mlflow_server: MlflowServer
):
    mlflow_server.register(platform.model, {"accuracy": 0.95})
    start_pinned_at(platform, "1")
    mlflow_server.register(platform.model, {"accuracy": 0.96}, alias="challenger")
    newer: list[str] = []

    def another_writer_proposes_a_newer_version(reads: int) -> None:
        if reads == 1:
            newer.append(
                mlflow_server.register(platform.model, {"accuracy": 0.97}, alias="challenger")
            )
            promote_in_another_process(platform, mlflow_server, "staging")

    registry = InterposedRegistry(
        MlflowRegistry(mlflow_server.url), another_writer_proposes_a_newer_version
    )
    report = promote_in_process(platform, registry, "staging")

    assert report.ok, [outcome.result for outcome in report.outcomes]
    branch = f"mlopsctl/promote/staging/{platform.model}"
    # The other writer's newer proposal stands; a blind force-push would have replaced it.
    assert platform.pin("staging", branch) == newer[0]
    assert platform.pin("staging") == "1"


def add_second_model(
    platform: Platform, model: str, file: str = LOCAL_MODEL_SERVER, first: bool = False
) -> None:
    """A second model pinned in a model-server overlay, following its own @challenger (after
    the platform's model, or before it when `first`, which then is planned and landed first)."""
    path = platform.checkout / file
    text = path.read_text()
    lines = (
        f"      # mlopsctl: model {model}@challenger\n      - SECOND_MODEL_URI=models:/{model}/0\n"
    )
    if first:
        marker = f"      # mlopsctl: model {platform.model}@"
        text = text.replace(marker, lines + marker, 1)
    else:
        text += lines
    path.write_text(text)
    platform.commit_and_push("second model")


def test_a_failed_read_for_one_model_does_not_stop_the_others(
    platform: Platform, mlflow_server: MlflowServer
):
    other = f"{platform.model}-second"
    add_second_model(platform, other)
    wanted = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    mlflow_server.register(other, {"accuracy": 0.95}, alias="challenger")
    registry = InterposedRegistry(MlflowRegistry(mlflow_server.url), lambda _reads: None)
    registry.failing_signatures.add(other)

    report = promote_in_process(platform, registry, "local")

    assert platform.pin("local") == wanted
    [failure] = report.failures
    assert (failure.environment, failure.key) == ("local", other)
    assert "reading MLmodel failed: connection reset" in failure.reason
    assert failure.exit_code == RegistryError.exit_code
    assert [outcome.kind for outcome in report.outcomes] == [OutcomeKind.COMMITTED]
    assert not report.ok
    # Every pass says it again, until the read works.
    again = promote_in_process(platform, registry, "local")
    assert [failure.key for failure in again.failures] == [other]


@pytest.mark.parametrize("bad_name", ["churn.lock", "iris..v2"])
def test_a_model_name_git_refuses_as_a_branch_fails_alone(
    platform: Platform, mlflow_server: MlflowServer, bad_name: str
):
    add_second_model(platform, bad_name, "overlays/staging/model-server/kustomization.yaml")
    wanted = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    mlflow_server.register(bad_name, {"accuracy": 0.95}, alias="challenger")

    report = promote_in_process(platform, MlflowRegistry(mlflow_server.url), "staging")

    branch = f"mlopsctl/promote/staging/{platform.model}"
    assert platform.pin("staging", branch) == wanted
    [failure] = report.failures
    assert failure.key == bad_name
    assert "cannot name a git branch" in failure.reason and "check-ref-format" in failure.reason
    kinds = {outcome.key: outcome.kind for outcome in report.outcomes}
    assert kinds == {platform.model: OutcomeKind.PROPOSED, bad_name: OutcomeKind.FAILED}


@pytest.fixture
def pull_requests(github: GitHubStandIn) -> Any:
    from mlopsctl.base.github import PullRequests

    return PullRequests(github.url, REPOSITORY, TOKEN)


def remote_branches(platform: Platform) -> list[str]:
    return git(platform.remote, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()


def test_a_proposal_no_longer_wanted_is_withdrawn_and_a_closed_one_stays_closed(
    platform: Platform, mlflow_server: MlflowServer, github: GitHubStandIn, pull_requests: Any
):
    first = mlflow_server.register(platform.model, {"accuracy": 0.95})
    start_pinned_at(platform, first)
    second = mlflow_server.register(platform.model, {"accuracy": 0.96}, alias="challenger")
    registry = MlflowRegistry(mlflow_server.url)
    branch = f"mlopsctl/promote/staging/{platform.model}"

    def promote_staging() -> Report:
        return promote_in_process(platform, registry, "staging", pull_requests=pull_requests)

    promote_staging()
    [pull] = github.pulls
    assert pull["state"] == "open" and branch in remote_branches(platform)

    # The alias goes back to the pinned version: the proposal is no longer wanted.
    registry.set_alias(platform.model, "challenger", first)
    report = promote_staging()
    assert [outcome.kind for outcome in report.outcomes] == [OutcomeKind.WITHDRAWN]
    assert pull["state"] == "closed"
    assert any("Withdrawn by mlopsctl" in comment["body"] for comment in github.comments)
    assert branch not in remote_branches(platform)
    assert promote_staging().outcomes == []  # and nothing more to do after that

    # It moves again: a new pull request. A person closes it; the next passes leave it closed.
    registry.set_alias(platform.model, "challenger", second)
    promote_staging()
    latest = github.pulls[-1]
    assert len(github.pulls) == 2 and latest["state"] == "open"
    latest["state"] = "closed"  # closed by a person, not merged
    for _ in range(2):
        report = promote_staging()
        assert [outcome.kind for outcome in report.outcomes] == [OutcomeKind.UNCHANGED]
        assert "left closed until the alias moves again" in report.outcomes[0].result
    assert len(github.pulls) == 2 and latest["state"] == "closed"

    # Until the alias moves again.
    third = mlflow_server.register(platform.model, {"accuracy": 0.97}, alias="challenger")
    promote_staging()
    assert len(github.pulls) == 3 and github.pulls[-1]["state"] == "open"
    assert platform.pin("staging", branch) == third


def test_not_worse_than_fails_closed_when_the_pinned_version_cannot_be_read(
    platform: Platform, mlflow_server: MlflowServer
):
    # Production compares with the pinned version; v99 is pinned but the registry has no v99.
    start_pinned_at(platform, "99")
    candidate = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="champion")
    report = promote_in_process(platform, MlflowRegistry(mlflow_server.url), "production")
    [refusal] = report.refusals
    assert (refusal.environment, refusal.model, refusal.version) == (
        "production",
        platform.model,
        candidate,
    )
    assert "pinned v99 does not exist in MLflow" in refusal.reason
    assert "fails closed" in refusal.reason
    assert report.outcomes == []
    assert not report.ok


def test_a_planner_error_is_not_swallowed(platform: Platform, mlflow_server: MlflowServer):
    # A pass that cannot even list its pins is an error of the whole pass, not an item's.
    with pytest.raises(MlopsctlError, match="no model pin"):
        flows.run(
            None,
            MlflowRegistry(mlflow_server.url),
            toolchain.resolve(TOOLS_DIR),
            str(platform.remote),
            flows.Landing(log=lambda _line: None, validator=edit_findings),
            model="no-such-model",
        )


def pins_planned(platform: Platform, environments: list[str]) -> int:
    """How many alias reads one plan of these environments makes: one per (model, alias), however
    many pins follow it."""
    config = load_config(platform.checkout)
    return len(
        {
            (located.model, located.alias)
            for located in inventory.model_pins(
                inventory.scan(platform.checkout, config.render_exclude), None, platform.model
            )
            if located.environment in environments
        }
    )


def set_pin_in_file(platform: Platform, file: str, version: str) -> None:
    path = platform.checkout / file
    path.write_text(
        re.sub(
            rf"models:/{platform.model}/[0-9]+",
            f"models:/{platform.model}/{version}",
            path.read_text(),
        )
    )
    platform.commit_and_push(f"{file} at v{version}")


def test_a_model_still_moving_in_another_file_keeps_its_pull_request(
    platform: Platform, mlflow_server: MlflowServer, github: GitHubStandIn, pull_requests: Any
):
    first = mlflow_server.register(platform.model, {"accuracy": 0.95})
    start_pinned_at(platform, first)
    second = mlflow_server.register(platform.model, {"accuracy": 0.96}, alias="challenger")
    # Half of staging already has v2 (its streamlit pin): that pin is settled, the model
    # server's is not, and the proposal for it must stand.
    set_pin_in_file(platform, "overlays/staging/streamlit/kustomization.yaml", second)

    report = promote_in_process(
        platform, MlflowRegistry(mlflow_server.url), "staging", pull_requests=pull_requests
    )

    branch = f"mlopsctl/promote/staging/{platform.model}"
    assert [outcome.kind for outcome in report.outcomes] == [OutcomeKind.PROPOSED]
    assert branch in remote_branches(platform)
    assert platform.pin("staging", branch) == second
    [pull] = github.pulls
    assert pull["state"] == "open"
    assert not github.comments  # no "Withdrawn by mlopsctl"


def test_a_later_environment_is_planned_again_when_the_branch_moved_under_an_earlier_one(
    platform: Platform, mlflow_server: MlflowServer
):
    first = mlflow_server.register(platform.model, {"accuracy": 0.95})
    start_pinned_at(platform, first)
    mlflow_server.register(platform.model, {"accuracy": 0.96}, alias="challenger")
    planned = pins_planned(platform, ["local", "staging"])
    newer: list[str] = []

    def another_writer_lands_after_the_whole_plan(reads: int) -> None:
        if reads == planned:  # both environments are planned with v2; then v3 lands on local
            newer.append(
                mlflow_server.register(platform.model, {"accuracy": 0.97}, alias="challenger")
            )
            promote_in_another_process(platform, mlflow_server, "local")

    registry = InterposedRegistry(
        MlflowRegistry(mlflow_server.url), another_writer_lands_after_the_whole_plan
    )
    report = flows.run(
        None,
        registry,
        toolchain.resolve(TOOLS_DIR),
        str(platform.remote),
        flows.Landing(log=lambda _line: None, validator=edit_findings),
        environments=["local", "staging"],
    )

    assert report.ok, [str(item) for item in [*report.failures, *report.refusals]]
    assert platform.pin("local") == newer[0]
    # Staging's share of the first plan (v2) was stale once main moved: it proposes v3.
    branch = f"mlopsctl/promote/staging/{platform.model}"
    assert platform.pin("staging", branch) == newer[0]
    assert platform.log(branch)[0] == f"promote(staging): {platform.model} v{first} -> v{newer[0]}"


def test_proposals_after_a_rejected_push_follow_the_new_plan(
    platform: Platform, mlflow_server: MlflowServer
):
    other = f"{platform.model}-second"
    add_second_model(platform, other, "overlays/staging/model-server/kustomization.yaml")
    mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    mlflow_server.register(other, {"accuracy": 0.95}, alias="challenger")
    planned = pins_planned(platform, ["staging"]) + 1  # and the second model's one pin
    newer: dict[str, str] = {}

    def another_writer_proposes_both_newer(reads: int) -> None:
        if reads == planned:
            for model in (platform.model, other):
                newer[model] = mlflow_server.register(model, {"accuracy": 0.97}, alias="challenger")
            promote_in_another_process(platform, mlflow_server, "staging")

    registry = InterposedRegistry(
        MlflowRegistry(mlflow_server.url), another_writer_proposes_both_newer
    )
    report = promote_in_process(platform, registry, "staging")

    assert report.ok, [outcome.result for outcome in report.outcomes]
    # The first model's push was rejected and the environment planned again: the second
    # model's proposal comes from that plan, and the other writer's newer one is not undone.
    assert (
        platform.pin("staging", f"mlopsctl/promote/staging/{platform.model}")
        == newer[platform.model]
    )
    text = platform.show(
        "overlays/staging/model-server/kustomization.yaml", f"mlopsctl/promote/staging/{other}"
    )
    assert f"models:/{other}/{newer[other]}" in text


def test_a_landing_failure_outlives_a_later_replan(platform: Platform, mlflow_server: MlflowServer):
    bad_name = "churn.lock"
    add_second_model(
        platform, bad_name, "overlays/staging/model-server/kustomization.yaml", first=True
    )
    mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="challenger")
    mlflow_server.register(bad_name, {"accuracy": 0.95}, alias="challenger")
    planned = pins_planned(platform, ["staging"]) + 1
    newer: list[str] = []

    def another_writer_proposes_a_newer_version(reads: int) -> None:
        if reads == planned:
            newer.append(
                mlflow_server.register(platform.model, {"accuracy": 0.97}, alias="challenger")
            )
            # It fails on the bad name too, and proposes the platform's model.
            promote_in_another_process(platform, mlflow_server, "staging", check=False)

    registry = InterposedRegistry(
        MlflowRegistry(mlflow_server.url), another_writer_proposes_a_newer_version
    )
    report = promote_in_process(platform, registry, "staging")

    # The bad name failed first; the re-plan after the rejected push must not forget it.
    assert [failure.key for failure in report.failures] == [bad_name]
    assert not report.ok and report.exit_code != 0
    assert platform.pin("staging", f"mlopsctl/promote/staging/{platform.model}") == newer[0]
    kinds = {outcome.key: outcome.kind for outcome in report.outcomes}
    assert kinds == {bad_name: OutcomeKind.FAILED, platform.model: OutcomeKind.PROPOSED}


def test_not_worse_than_fails_closed_when_the_pinned_run_lacks_the_metric(
    platform: Platform, mlflow_server: MlflowServer
):
    pinned = mlflow_server.register(platform.model, {"loss": 0.2})
    start_pinned_at(platform, pinned)
    candidate = mlflow_server.register(platform.model, {"accuracy": 0.95}, alias="champion")

    report = promote_in_process(platform, MlflowRegistry(mlflow_server.url), "production")

    [refusal] = report.refusals
    assert (refusal.model, refusal.version) == (platform.model, candidate)
    assert "pinned version's run logged no 'accuracy' metric" in refusal.reason
    assert "fails closed" in refusal.reason
    assert report.outcomes == [] and platform.pin("production") == pinned


def test_a_pull_request_opened_elsewhere_in_between_is_updated_not_duplicated(
    github: GitHubStandIn, pull_requests: Any
):
    branch = "mlopsctl/promote/staging/iris"
    github.before_create.append(
        lambda state: state.open_pull(branch, "main", "by another writer", "")
    )

    url = pull_requests.open_or_update(branch, "main", "promote(staging): iris v1 -> v2", "body")

    [pull] = github.pulls
    assert url == pull["html_url"]
    assert (pull["title"], pull["body"]) == ("promote(staging): iris v1 -> v2", "body")
    assert [method for method, _ in github.requests] == ["GET", "POST", "GET", "PATCH"]

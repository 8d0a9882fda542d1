"""Promotions that cannot go wrong: each fault the review reproduced, against a real MLflow
server and real bare git remotes.

- a push rejected because another writer landed first is planned again from the new head;
- one bad item (a model name git refuses as a branch, a failed registry read) fails alone;
- a pull request no longer wanted is withdrawn; one a person closed stays closed;
- notWorseThan fails closed when the pinned version cannot be read.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlopsctl import toolchain
from mlopsctl.errors import MlopsctlError
from mlopsctl.promote import flows
from mlopsctl.promote.landing import OutcomeKind, Report
from mlopsctl.registry import MlflowRegistry, ModelVersion, RegistryError
from tests.conftest import TOOLS_DIR
from tests.github_standin import REPOSITORY, TOKEN, GitHubStandIn
from tests.mlflow_fixtures import MlflowServer
from tests.platform_fixtures import Platform, git
from tests.test_promote import start_pinned_at

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
        flows.Landing(log=lambda _line: None, **landing),
        environment=environment,
    )


def promote_in_another_process(platform: Platform, server: MlflowServer, environment: str) -> None:
    """Another writer (a second promoter, the scheduled workflow) runs to completion."""
    subprocess.run(
        [
            str(Path(sys.executable).parent / "mlopsctl"),
            "promote",
            "--repo",
            str(platform.checkout),
            "--remote",
            str(platform.remote),
            "--mlflow-uri",
            server.url,
            "--env",
            environment,
        ],
        check=True,
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


def add_second_model(platform: Platform, model: str, file: str = LOCAL_MODEL_SERVER) -> None:
    """A second model pinned in a model-server overlay, following its own @challenger."""
    path = platform.checkout / file
    text = path.read_text()
    path.write_text(
        text
        + f"      # mlopsctl: model {model}@challenger\n"
        + f"      - SECOND_MODEL_URI=models:/{model}/0\n"
    )
    git(platform.checkout, "add", ".")
    git(
        platform.checkout,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.test",
        "commit",
        "-qm",
        "second model",
    )
    git(platform.checkout, "push", "--quiet", str(platform.remote), "HEAD:main")


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
    from mlopsctl.github import PullRequests

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
            flows.Landing(log=lambda _line: None),
            model="no-such-model",
        )

"""The Promoter landing a plan on a real clone of a real bare remote: one validated commit per
environment that takes commits, a branch per model where pull requests are asked for, a plan
made again from the new head whenever another writer moved the branch, and nothing half-done
when an edit does not validate or cannot be made.

The planner is a stand-in for the registry's: it reads the pins of the clone it is handed and
asks for one version, as `plan_models` would with an alias pointing there."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlopsctl.base import git, inventory, toolchain
from mlopsctl.base.config import Config, load_config
from mlopsctl.base.registry import ModelVersion
from mlopsctl.promote.edits import ModelChange
from mlopsctl.promote.landing import OutcomeKind, Promoter, Report
from mlopsctl.promote.plan import Failure, Plan, Refusal, Settled
from tests.support.paths import TOOLS_DIR
from tests.support.trees import write_tree

MODEL = "iris"
BRANCH = "mlopsctl/promote/staging/iris"
CONFIG = """\
repository:
  url: https://example.test/platform.git
environments: [local, dev, staging]
kubernetesVersion: "1.35"
promotion:
  branch: main
  author:
    name: promoter-bot
    email: bot@example.test
  environments:
    local:
      mode: commit
    dev:
      mode: commit
    staging:
      mode: pull-request
"""


def run_git(directory: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=directory, check=True, capture_output=True, text=True
    ).stdout.strip()


def pin_file(version: str) -> str:
    return (
        "# What this overlay serves.\nconfigMapGenerator:\n  - name: pin\n    literals:\n"
        f"      # mlopsctl: model {MODEL}@champion\n      - MODEL_URI=models:/{MODEL}/{version}\n"
    )


def pinned_file(environment: str) -> str:
    return f"overlays/{environment}/app/kustomization.yaml"


@dataclass
class Remote:
    """A bare remote holding the tiny platform, and what is on it."""

    path: Path

    def show(self, path: str, branch: str = "main") -> str:
        """The file's bytes on `branch`, as text (its last newline kept)."""
        return subprocess.run(
            ["git", "show", f"{branch}:{path}"],
            cwd=self.path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def subjects(self, branch: str = "main") -> list[str]:
        return run_git(self.path, "log", "--format=%s", branch).splitlines()

    def head(self, branch: str = "main") -> str:
        return run_git(self.path, "rev-parse", branch)

    def branches(self) -> list[str]:
        return run_git(self.path, "branch", "--format=%(refname:short)").splitlines()


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """Three environments, each pinning iris at v1, on main of a bare remote."""
    tree = tmp_path / "platform"
    write_tree(
        tree,
        {
            "mlopsctl.yaml": CONFIG,
            **{pinned_file(env): pin_file("1") for env in ("local", "dev", "staging")},
        },
    )
    run_git(tree, "init", "--quiet", "--initial-branch=main")
    run_git(tree, "add", "--all")
    run_git(tree, "-c", "user.name=t", "-c", "user.email=t@e.test", "commit", "-qm", "platform")
    bare = tmp_path / "remote.git"
    run_git(tmp_path, "clone", "--quiet", "--bare", str(tree), str(bare))
    return Remote(bare)


def fresh_directory(remote: Remote, prefix: str) -> Path:
    """A directory beside the remote that no earlier clone took."""
    return remote.path.parent / f"{prefix}-{len(list(remote.path.parent.glob(prefix + '-*')))}"


def another_writer_pushes(remote: Remote, files: dict[str, str], message: str) -> None:
    """Someone else lands a commit on main, from a clone of their own."""
    workspace = fresh_directory(remote, "other-writer")
    run_git(remote.path.parent, "clone", "--quiet", str(remote.path), str(workspace))
    write_tree(workspace, files)
    run_git(workspace, "add", "--all")
    run_git(workspace, "-c", "user.name=o", "-c", "user.email=o@e.test", "commit", "-qm", message)
    run_git(workspace, "push", "--quiet", "origin", "HEAD:main")


@dataclass
class Planner:
    """Every pin of `environments` should be at `version`; `before_each` runs as each plan starts
    (where a test has another writer act)."""

    version: str
    environments: Sequence[str]
    before_each: Callable[[int], None] = lambda _calls: None
    calls: int = 0

    def __call__(self, clone: Path) -> Plan:
        self.calls += 1
        self.before_each(self.calls)
        plan = Plan()
        for located in inventory.model_pins(inventory.scan(clone), model=MODEL):
            environment = located.environment or ""
            if environment not in self.environments:
                continue
            if located.pin.value == self.version:
                plan.settled.append(Settled(environment, MODEL, located.alias, self.version))
                continue
            plan.edits.append(change(environment, located.file, located.pin.value, self.version))
        return plan


def change(environment: str, file: str, old: str, new: str, model: str = MODEL) -> ModelChange:
    version = ModelVersion(model, new, "READY", f"run-{new}", f"models:/{model}/{new}")
    return ModelChange(environment, file, model, "champion", old, version, {"accuracy": 0.9}, {})


@dataclass
class Validator:
    """Records the roots each validation was asked about; answers `findings`."""

    findings: list[str] = field(default_factory=list)
    asked: list[list[str]] = field(default_factory=list)

    def __call__(
        self, clone: Path, config: Config, roots: Sequence[str], tools: toolchain.Toolchain
    ) -> list[str]:
        self.asked.append(list(roots))
        return self.findings


@dataclass
class Landed:
    report: Report
    clone: Path
    log: list[str]


def land(
    remote: Remote,
    planner: Callable[[Path], Plan],
    validator: Validator | None = None,
    dry_run: bool = False,
    max_attempts: int = 3,
) -> Landed:
    origin = git.Remote(str(remote.path))
    clone = origin.clone("main", fresh_directory(remote, "clone"))
    log: list[str] = []
    promoter = Promoter(
        load_config(clone),
        toolchain.resolve(TOOLS_DIR),
        planner,
        origin,
        "http://mlflow.test",
        max_attempts,
        sleep=lambda _seconds: None,  # the back-off between pushes is not what is tested
        log=log.append,
        validator=validator or Validator(),
    )
    return Landed(promoter.land(clone, dry_run=dry_run), clone, log)


def test_a_commit_environment_gets_one_validated_commit_that_changes_only_the_version(
    remote: Remote,
):
    validator = Validator()
    landed = land(remote, Planner("2", ["local"]), validator)
    [outcome] = landed.report.outcomes
    assert outcome.kind is OutcomeKind.COMMITTED
    assert outcome.result == f"committed {remote.head()[:12]} to main"
    assert (landed.report.ok, landed.report.exit_code) == (True, 0)
    # Only the roots that read the edited file are validated.
    assert validator.asked == [["overlays/local/app"]]
    assert remote.show(pinned_file("local")) == pin_file("2")
    assert remote.show(pinned_file("dev")) == pin_file("1")
    assert remote.subjects() == [f"promote(local): {MODEL} v1 -> v2", "platform"]
    author = run_git(remote.path, "log", "-1", "--format=%an <%ae>", "main")
    assert author == "promoter-bot <bot@example.test>"
    trailers = run_git(remote.path, "log", "-1", "--format=%(trailers:only,unfold)", "main")
    assert "Model-Version: 2" in trailers and "Environment: local" in trailers
    assert f"MLflow-Url: http://mlflow.test/#/models/{MODEL}/versions/2" in trailers


def test_an_edit_already_on_the_branch_lands_no_second_commit(remote: Remote):
    land(remote, Planner("2", ["local"]))
    head = remote.head()

    def stale(_clone: Path) -> Plan:
        # A plan made before the first landing: it still asks to move v1 to v2.
        return Plan([change("local", pinned_file("local"), "1", "2")])

    [outcome] = land(remote, stale).report.outcomes
    assert (outcome.kind, outcome.result) == (
        OutcomeKind.UNCHANGED,
        "nothing to do: Git already pins these versions",
    )
    assert remote.head() == head


def test_an_edit_that_does_not_validate_is_not_pushed_and_the_clone_is_reset(remote: Remote):
    head = remote.head()
    landed = land(remote, Planner("2", ["local"]), Validator(["overlays/local/app: it broke"]))
    [outcome] = landed.report.outcomes
    assert outcome.kind is OutcomeKind.INVALID
    assert outcome.result == (
        "not committed: the edited overlay does not validate:\n  overlays/local/app: it broke"
    )
    assert "+      - MODEL_URI=models:/iris/2" in outcome.diff
    assert landed.report.exit_code == 1
    assert remote.head() == head
    assert (landed.clone / pinned_file("local")).read_text() == pin_file("1")


def test_a_dry_run_shows_each_diff_and_changes_nothing(remote: Remote):
    head = remote.head()
    landed = land(remote, Planner("2", ["local", "staging"]), dry_run=True)
    assert [(outcome.environment, outcome.kind) for outcome in landed.report.outcomes] == [
        ("local", OutcomeKind.DRY_RUN),
        ("staging", OutcomeKind.DRY_RUN),
    ]
    for outcome in landed.report.outcomes:
        assert outcome.result == "dry run: nothing changed"
        assert f"-      - MODEL_URI=models:/{MODEL}/1\n" in outcome.diff
        assert f"+      - MODEL_URI=models:/{MODEL}/2\n" in outcome.diff
    assert (remote.head(), remote.branches()) == (head, ["main"])
    assert run_git(landed.clone, "status", "--porcelain") == ""


def test_a_push_rejected_because_main_moved_is_planned_again_on_the_new_head(remote: Remote):
    def another_writer_lands_first(calls: int) -> None:
        if calls == 1:  # between this plan and its push
            another_writer_pushes(remote, {"README.md": "docs\n"}, "docs")

    planner = Planner("2", ["local"], another_writer_lands_first)
    landed = land(remote, planner)
    assert landed.report.ok
    assert planner.calls == 2
    assert remote.subjects() == [f"promote(local): {MODEL} v1 -> v2", "docs", "platform"]
    assert "local: main moved on; planning again from its new head" in landed.log


def test_a_promotion_another_writer_landed_meanwhile_is_not_landed_twice(remote: Remote):
    def another_writer_lands_the_same(calls: int) -> None:
        if calls == 1:
            another_writer_pushes(remote, {pinned_file("local"): pin_file("2")}, "their promote")

    landed = land(remote, Planner("2", ["local"], another_writer_lands_the_same))
    assert (landed.report.ok, landed.report.outcomes) == (True, [])
    assert remote.subjects() == ["their promote", "platform"]


def test_a_branch_that_keeps_moving_is_given_up_after_the_attempts(remote: Remote):
    def another_writer_every_time(calls: int) -> None:
        another_writer_pushes(remote, {"README.md": f"docs {calls}\n"}, f"docs {calls}")

    landed = land(remote, Planner("2", ["local"], another_writer_every_time), max_attempts=2)
    [failure] = landed.report.failures
    assert (
        str(failure) == f"local: {MODEL}: failed: gave up after 2 pushes rejected by a moving main"
    )
    assert [outcome.kind for outcome in landed.report.outcomes] == [OutcomeKind.FAILED]
    assert landed.report.exit_code == 4  # the git remote's code
    assert not any(subject.startswith("promote(") for subject in remote.subjects())


def test_a_pull_request_environment_gets_a_branch_and_main_is_untouched(remote: Remote):
    head = remote.head()
    landed = land(remote, Planner("2", ["staging"]))
    [outcome] = landed.report.outcomes
    assert (outcome.kind, outcome.branch, outcome.key) == (OutcomeKind.PROPOSED, BRANCH, MODEL)
    assert outcome.result == f"pushed {remote.head(BRANCH)[:12]} to branch {BRANCH}"
    assert outcome.pull_request == ""  # no GitHub here: the branch is the proposal
    assert remote.head() == head
    assert remote.show(pinned_file("staging"), BRANCH) == pin_file("2")
    assert remote.subjects(BRANCH) == [f"promote(staging): {MODEL} v1 -> v2", "platform"]
    assert run_git(landed.clone, "branch", "--show-current") == "main"

    proposed = remote.head(BRANCH)
    [again] = land(remote, Planner("2", ["staging"])).report.outcomes
    assert (again.kind, again.result) == (
        OutcomeKind.PROPOSED,
        f"branch {BRANCH} already proposes {MODEL} v1 -> v2",
    )
    assert remote.head(BRANCH) == proposed


def test_a_proposal_no_longer_wanted_is_withdrawn(remote: Remote):
    land(remote, Planner("2", ["staging"]))
    assert BRANCH in remote.branches()
    # The alias went back to the pinned v1: the branch proposes what is no longer wanted.
    [outcome] = land(remote, Planner("1", ["staging"])).report.outcomes
    assert (outcome.kind, outcome.result) == (
        OutcomeKind.WITHDRAWN,
        f"deleted branch {BRANCH}: {MODEL}@champion points at the pinned v1 again",
    )
    assert remote.branches() == ["main"]
    assert land(remote, Planner("1", ["staging"])).report.outcomes == []


def test_an_environment_whose_edit_cannot_be_made_fails_alone(remote: Remote):
    def planner(_clone: Path) -> Plan:
        return Plan(
            [
                # local's file pins no such model: the edit cannot be carried out.
                change("local", pinned_file("local"), "1", "2", model="unknown-model"),
                change("dev", pinned_file("dev"), "1", "2"),
            ]
        )

    landed = land(remote, planner)
    assert [(outcome.environment, outcome.kind) for outcome in landed.report.outcomes] == [
        ("local", OutcomeKind.FAILED),
        ("dev", OutcomeKind.COMMITTED),
    ]
    [failure] = landed.report.failures
    assert (failure.environment, failure.key, failure.exit_code) == ("local", "commit", 2)
    assert "unknown-model" in failure.reason
    assert landed.report.exit_code == 2
    assert remote.subjects() == [f"promote(dev): {MODEL} v1 -> v2", "platform"]
    assert remote.show(pinned_file("local")) == pin_file("1")


def test_refusals_failures_and_notes_of_the_plan_reach_the_report(remote: Remote):
    refusal = Refusal("local", MODEL, "champion", "2", "not READY")
    failure = Failure("dev", MODEL, "MLflow is unreachable", 3)

    def planner(_clone: Path) -> Plan:
        return Plan(refusals=[refusal], failures=[failure], notes=["local: nothing promoted yet"])

    head = remote.head()
    report = land(remote, planner).report
    assert (report.refusals, report.failures, report.outcomes) == ([refusal], [failure], [])
    assert report.notes == ["local: nothing promoted yet"]
    assert (report.ok, report.exit_code) == (False, 3)
    assert report.refused == [
        f"local: {MODEL}@champion -> v2 refused: not READY",
        f"dev: {MODEL}: failed: MLflow is unreachable",
    ]
    assert remote.head() == head

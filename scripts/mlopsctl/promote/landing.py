"""Landing a plan: edit a clone, validate, commit, push; pull requests where an environment
takes them.

Every write is planned against the head it lands on. When a push is rejected because the branch
moved (another writer landed first), the clone is reset to the new head and the plan is made
again, gates included, from that head and the registry: replaying the old edits could take the
branch back down to an older version and word the commit with a pin that is no longer there.
"""

from __future__ import annotations

import difflib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from mlopsctl.base import git, timings
from mlopsctl.base.config import Config, EnvironmentPolicy
from mlopsctl.base.errors import GitError, MlopsctlError
from mlopsctl.base.github import PullRequests
from mlopsctl.base.kustomize import affected_roots
from mlopsctl.base.toolchain import Toolchain
from mlopsctl.promote.edits import (
    Edit,
    branch_name,
    commit_message,
    proposed_value,
    pull_request_body,
    withdrawn_body,
)
from mlopsctl.promote.plan import Failure, Plan, Refusal, Settled


class OutcomeKind(StrEnum):
    COMMITTED = "committed"  # on the promotion branch
    PROPOSED = "proposed"  # on a pull-request branch
    INVALID = "invalid"  # the edited overlay does not validate: nothing written
    UNCHANGED = "unchanged"  # nothing to write (already there, or left as a person decided)
    WITHDRAWN = "withdrawn"  # a pull request no longer wanted was closed
    FAILED = "failed"  # this item could not be landed this pass; the others were
    DRY_RUN = "dry-run"


@dataclass
class Outcome:
    environment: str
    kind: OutcomeKind
    changes: Sequence[Edit]
    result: str
    diff: str = ""
    commit: str = ""
    branch: str = ""
    pull_request: str = ""
    key: str = ""  # the model or image, when the outcome is about one

    @property
    def ok(self) -> bool:
        return self.kind not in (OutcomeKind.INVALID, OutcomeKind.FAILED)


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.refusals and not self.failures and all(outcome.ok for outcome in self.outcomes)
        )

    @property
    def exit_code(self) -> int:
        """0 when all is well; else the highest exit code of a failure, or 1."""
        if self.ok:
            return 0
        return max([failure.exit_code for failure in self.failures] or [1])

    @property
    def refused(self) -> list[str]:
        """Refusals and failures as lines (the service's reading until it reads the kinds)."""
        return [str(item) for item in [*self.refusals, *self.failures]]


# Plans the edits on a clone as it is now (called again after the branch moves on).
Planner = Callable[[Path], Plan]

# Checks an edited clone: (clone, its config, the roots the edit touches, the tools) -> one line
# per finding, none when it validates. Handed in from above (validate's `edit_findings`), so that
# promotion does not import the validation pipeline.
Validator = Callable[[Path, Config, Sequence[str], Toolchain], list[str]]


@dataclass
class Promoter:
    config: Config
    toolchain: Toolchain
    planner: Planner
    # The remote the clone was made from, with its credentials: every fetch and push goes
    # through it (the clone's `origin`).
    remote: git.Remote
    mlflow_url: str = ""
    max_attempts: int = 20
    pull_requests: PullRequests | None = None
    backoff_seconds: float = 0.2
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = print
    validator: Validator = field(kw_only=True)

    def land(self, clone: Path, dry_run: bool = False) -> Report:
        """Plan on the clone, then land each environment's share of the plan."""
        # Listed before planning: a branch another writer pushes after this point is seen as
        # moved (the lease fails) instead of being overwritten by this plan.
        branches = self._promotion_branches(clone) if self._proposes_anywhere() else {}
        plan = self._plan(clone)
        planned_at = git.head(clone)
        landed: set[str] = set()  # commits this run pushed on top of the head it planned on
        report = Report(notes=list(plan.notes))
        environments = list(
            dict.fromkeys(
                [edit.environment for edit in plan.edits]
                + [item.environment for item in plan.settled]
                + [item.environment for item in plan.refusals]
                + [item.environment for item in plan.failures]
            )
        )
        for environment in environments:
            if not dry_run and not self._only_own_commits_since(clone, planned_at, landed):
                # Another writer moved the branch while an earlier environment landed (its
                # rejected push reset the clone to the new head): this environment's share of
                # the first plan may be stale, so it is planned again from that head.
                plan = self._plan(clone)
                planned_at = git.head(clone)
                landed.clear()
            environment_plan = plan.for_environment(environment)
            policy = self.config.promotion.for_environment(environment)
            if dry_run:
                if environment_plan.edits:
                    report.outcomes.append(self._dry_run(clone, environment, environment_plan))
            elif policy.mode == "commit":
                try:
                    outcomes, environment_plan = self._commit(clone, environment, environment_plan)
                except MlopsctlError as error:
                    # This environment's commit failed (a refused push, a pin that cannot be
                    # edited); the other environments still land.
                    failure = Failure(environment, "commit", str(error), error.exit_code)
                    environment_plan.failures.append(failure)
                    outcomes = [Outcome(environment, OutcomeKind.FAILED, [], str(failure))]
                    self._recover(
                        lambda: self.remote.reset(clone, self.config.promotion.branch),
                        "reset the clone to the remote's head",
                    )
                report.outcomes.extend(outcomes)
                landed.update(outcome.commit for outcome in outcomes if outcome.commit)
            else:
                outcomes, environment_plan = self._propose_all(
                    clone, policy, environment_plan, branches
                )
                report.outcomes.extend(outcomes)
            report.refusals.extend(environment_plan.refusals)
            report.failures.extend(environment_plan.failures)
            report.notes.extend(note for note in environment_plan.notes if note not in report.notes)
        return report

    @staticmethod
    def _only_own_commits_since(clone: Path, planned_at: str, landed: set[str]) -> bool:
        """Whether the clone's head is the planned head plus only commits this run landed."""
        listing = git.git(clone, "rev-list", f"{planned_at}..HEAD", check=False)
        if listing.returncode:
            return False  # the planned head is gone from this clone: plan again
        return set(listing.stdout.split()) <= landed

    def _recover(self, action: Callable[[], object], what: str) -> None:
        """Put the clone back in order after a failed landing, if git can.

        A failure to do so (the remote is down, which is often why the landing failed) must not
        hide the landing's own error: the next landing or the next pass puts it back again.
        """
        try:
            action()
        except MlopsctlError as error:
            self.log(f"could not {what}: {error}")

    def _plan(self, clone: Path) -> Plan:
        with timings.phase("plan"):
            return self.planner(clone)

    def _replan(self, clone: Path, environment: str) -> Plan:
        return self._plan(clone).for_environment(environment)

    def _apply(self, clone: Path, edits: Sequence[Edit]) -> tuple[list[Edit], str, list[str]]:
        """Edit the clone for the edits still needed there: (applied, diff, findings)."""
        applied: list[Edit] = []
        diffs = []
        for file in sorted({edit.file for edit in edits}):
            path = clone / file
            # Bytes in and out, no newline translation: a CRLF file keeps its \r\n on every line
            # and the commit changes the pinned value alone.
            before = path.read_bytes().decode("utf-8") if path.is_file() else ""
            after = before
            for edit in edits:
                if edit.file == file and (edited := edit.apply(after)) is not None:
                    after = edited
                    applied.append(edit)
            if after != before:
                path.write_bytes(after.encode("utf-8"))
                diffs.append(
                    "".join(
                        difflib.unified_diff(
                            before.splitlines(keepends=True),
                            after.splitlines(keepends=True),
                            f"a/{file}",
                            f"b/{file}",
                        )
                    )
                )
        if not applied:
            return [], "", []
        with timings.phase("validate"):
            roots = affected_roots(
                clone, [edit.file for edit in applied], self.config.render_exclude
            )
            findings = self.validator(clone, self.config, roots, self.toolchain)
        return applied, "".join(diffs), findings

    def _backoff(self, attempt: int) -> None:
        # Full jitter, capped: concurrent promoters spread out instead of colliding again.
        self.sleep(random.uniform(0, min(4.0, self.backoff_seconds * 2**attempt)))

    def _dry_run(self, clone: Path, environment: str, plan: Plan) -> Outcome:
        applied, diff, findings = self._apply(clone, plan.edits)
        git.git(clone, "checkout", "--quiet", "--", ".")
        result = "dry run: nothing changed"
        kind = OutcomeKind.DRY_RUN
        if findings:
            result += "; the edit would not validate:\n  " + "\n  ".join(findings)
            kind = OutcomeKind.INVALID
        return Outcome(environment, kind, applied, result, diff)

    def _commit(self, clone: Path, environment: str, plan: Plan) -> tuple[list[Outcome], Plan]:
        """Land the environment's edits in one commit on the promotion branch."""
        branch = self.config.promotion.branch
        author = git.Author(self.config.promotion.author_name, self.config.promotion.author_email)
        for attempt in range(self.max_attempts):
            if not plan.edits:
                return [], plan
            applied, diff, findings = self._apply(clone, plan.edits)
            if findings:
                self.remote.reset(clone, branch)
                return [
                    Outcome(
                        environment,
                        OutcomeKind.INVALID,
                        applied,
                        "not committed: the edited overlay does not validate:\n  "
                        + "\n  ".join(findings),
                        diff=diff,
                    )
                ], plan
            if not applied:
                return [
                    Outcome(
                        environment,
                        OutcomeKind.UNCHANGED,
                        [],
                        "nothing to do: Git already pins these versions",
                    )
                ], plan
            subject, body, trailers = commit_message(environment, applied, self.mlflow_url)
            sha = git.commit(
                clone, sorted({edit.file for edit in applied}), subject, body, trailers, author
            )
            if self.remote.push(clone, f"HEAD:refs/heads/{branch}"):
                return [
                    Outcome(
                        environment,
                        OutcomeKind.COMMITTED,
                        applied,
                        f"committed {sha[:12]} to {branch}",
                        diff=diff,
                        commit=sha,
                    )
                ], plan
            self.log(f"{environment}: {branch} moved on; planning again from its new head")
            self.remote.reset(clone, branch)
            self._backoff(attempt)
            plan = self._replan(clone, environment)
        failure = Failure(
            environment,
            ", ".join(sorted({edit.key for edit in plan.edits})),
            f"gave up after {self.max_attempts} pushes rejected by a moving {branch}",
            GitError.exit_code,
        )
        plan.failures.append(failure)
        return [Outcome(environment, OutcomeKind.FAILED, [], str(failure))], plan

    def _proposes_anywhere(self) -> bool:
        return any(policy.mode == "pull-request" for policy in self.config.promotion.environments)

    def _propose_all(
        self, clone: Path, policy: EnvironmentPolicy, plan: Plan, branches: dict[str, str]
    ) -> tuple[list[Outcome], Plan]:
        """One branch (and pull request) per model or image; each lands or fails on its own.

        A rejected push re-plans the environment, so each key's edits are taken from the plan
        as it is when its turn comes, and a key that only the new plan has is proposed too.
        """
        outcomes: list[Outcome] = []
        # Kept apart from the plan, which a re-plan replaces: a landing failure is never lost.
        failures: list[Failure] = []
        done: set[str] = set()
        while pending := [edit.key for edit in plan.edits if edit.key not in done]:
            key = pending[0]
            done.add(key)
            edits = [edit for edit in plan.edits if edit.key == key]
            try:
                outcome, plan = self._propose(clone, policy, key, edits, branches, plan)
            except MlopsctlError as error:
                # A model whose name git refuses as a branch, a GitHub error: this item only.
                failure = Failure(policy.environment, key, str(error), error.exit_code)
                failures.append(failure)
                outcome = Outcome(policy.environment, OutcomeKind.FAILED, [], str(failure), key=key)
                self._recover(
                    lambda: git.git(
                        clone, "checkout", "--quiet", "--force", self.config.promotion.branch
                    ),
                    f"check out {self.config.promotion.branch} again",
                )
            outcomes.append(outcome)
        # A model is withdrawn only when every pin of it here is settled: one still moving,
        # refused or failed in another file keeps its pull request open.
        unsettled = {edit.key for edit in plan.edits}
        unsettled.update(refusal.model for refusal in plan.refusals)
        unsettled.update(failure.key for failure in [*plan.failures, *failures])
        for settled in plan.settled:
            if settled.model in unsettled:
                continue
            try:
                withdrawn = self._withdraw(clone, settled, branches)
            except MlopsctlError as error:
                failure = Failure(settled.environment, settled.model, str(error), error.exit_code)
                failures.append(failure)
                withdrawn = Outcome(
                    settled.environment, OutcomeKind.FAILED, [], str(failure), key=settled.model
                )
            if withdrawn is not None:
                outcomes.append(withdrawn)
        plan.failures.extend(failure for failure in failures if failure not in plan.failures)
        return outcomes, plan

    def _promotion_branches(self, clone: Path) -> dict[str, str]:
        """Every mlopsctl branch on the remote and its commit, in one round trip."""
        listing = self.remote.git(clone, "ls-remote", "origin", "refs/heads/mlopsctl/*").stdout
        branches = {}
        for line in listing.splitlines():
            sha, _, ref = line.partition("\t")
            branches[ref.removeprefix("refs/heads/")] = sha
        return branches

    def _propose(
        self,
        clone: Path,
        policy: EnvironmentPolicy,
        key: str,
        edits: Sequence[Edit],
        branches: dict[str, str],
        plan: Plan,
    ) -> tuple[Outcome, Plan]:
        environment = policy.environment
        base = self.config.promotion.branch
        branch = branch_name(edits[0].verb, environment, key)
        if git.git(clone, "check-ref-format", f"refs/heads/{branch}", check=False).returncode:
            raise MlopsctlError(
                f"{key!r} cannot name a git branch ({branch!r} is refused by git "
                "check-ref-format), so no pull request can propose it"
            )
        author = git.Author(self.config.promotion.author_name, self.config.promotion.author_email)
        for attempt in range(self.max_attempts):
            if not edits:
                return Outcome(
                    environment, OutcomeKind.UNCHANGED, [], "nothing to propose", key=key
                ), plan
            left_closed = self._closed_by_a_person(branch, base, edits)
            if left_closed is not None:
                return Outcome(
                    environment, OutcomeKind.UNCHANGED, [], left_closed, branch=branch, key=key
                ), plan
            outcome = self._push_branch(clone, policy, branch, edits, branches, author)
            if outcome is not None:
                return outcome, plan
            self.log(f"{environment}: {branch} moved on; planning again from the new heads")
            self.remote.reset(clone, base)
            self._backoff(attempt)
            branches.clear()
            branches.update(self._promotion_branches(clone))
            plan = self._replan(clone, environment)
            edits = [edit for edit in plan.edits if edit.key == key]
        raise GitError(
            f"gave up after {self.max_attempts} pushes to {branch} rejected by another writer"
        )

    def _closed_by_a_person(self, branch: str, base: str, edits: Sequence[Edit]) -> str | None:
        """Why no pull request is opened: a person closed one proposing this very value."""
        if self.pull_requests is None:
            return None
        latest = self.pull_requests.latest(branch, base)
        if latest is None or latest.state != "closed" or latest.merged:
            return None
        if proposed_value(latest.body, edits[0].key) != edits[0].new_value:
            return None  # the alias moved since: a new proposal is wanted
        return (
            f"pull request {latest.url} proposing {edits[0].summary()} was closed without "
            "merging; left closed until the alias moves again"
        )

    def _push_branch(
        self,
        clone: Path,
        policy: EnvironmentPolicy,
        branch: str,
        edits: Sequence[Edit],
        branches: dict[str, str],
        author: git.Author,
    ) -> Outcome | None:
        """Rebuild the branch from the base with the edits; None when another writer moved it."""
        environment = policy.environment
        base = self.config.promotion.branch
        key = edits[0].key
        git.git(clone, "checkout", "--quiet", "-B", branch, f"origin/{base}")
        try:
            applied, diff, findings = self._apply(clone, edits)
            if findings:
                return Outcome(
                    environment,
                    OutcomeKind.INVALID,
                    applied,
                    "not pushed: the edited overlay does not validate:\n  " + "\n  ".join(findings),
                    diff=diff,
                    key=key,
                )
            if not applied:
                return Outcome(
                    environment,
                    OutcomeKind.UNCHANGED,
                    [],
                    f"nothing to do: {base} already has {edits[0].summary().split(' -> ')[-1]}",
                    key=key,
                )
            subject, body, trailers = commit_message(environment, applied, self.mlflow_url)
            remote_head = branches.get(branch, "")
            if remote_head and self._holds(clone, remote_head, {edit.file for edit in applied}):
                result = f"branch {branch} already proposes {edits[0].summary()}"
                sha = ""
            else:
                sha = git.commit(
                    clone, sorted({edit.file for edit in applied}), subject, body, trailers, author
                )
                # The branch belongs to mlopsctl and is rebuilt from the base each time, but only
                # over the head this plan saw: a newer proposal by another writer is not undone.
                if not self.remote.push(
                    clone,
                    f"HEAD:refs/heads/{branch}",
                    force_with_lease=f"refs/heads/{branch}:{remote_head}",
                ):
                    return None
                branches[branch] = sha
                result = f"pushed {sha[:12]} to branch {branch}"
            # Also when the branch was already there: a run killed after its push left no PR.
            pull_request = ""
            if self.pull_requests is not None:
                pull_request = self.pull_requests.open_or_update(
                    branch, base, subject, pull_request_body(applied, diff, trailers)
                )
            return Outcome(
                environment,
                OutcomeKind.PROPOSED,
                applied,
                result,
                diff=diff,
                commit=sha,
                branch=branch,
                pull_request=pull_request,
                key=key,
            )
        finally:
            git.git(clone, "checkout", "--quiet", "--force", base)

    def _holds(self, clone: Path, revision: str, files: set[str]) -> bool:
        """Whether `revision` of the remote holds these files exactly as edited here."""
        # A branch deleted since it was listed cannot be fetched: then it holds nothing.
        fetched = self.remote.git(clone, "fetch", "--quiet", "origin", revision, check=False)
        if fetched.returncode:
            return False
        return all(
            git.file_at(clone, revision, file) == (clone / file).read_text() for file in files
        )

    def _withdraw(self, clone: Path, settled: Settled, branches: dict[str, str]) -> Outcome | None:
        """Close the pull request and delete the branch of a move that is no longer wanted
        (the alias points at the pinned version again)."""
        branch = branch_name("promote", settled.environment, settled.model)
        base = self.config.promotion.branch
        remote_head = branches.get(branch)
        if remote_head is None:
            # No branch, no open pull request of ours (GitHub closes one whose branch is deleted):
            # the steady state costs no call to GitHub.
            return None
        reason = f"{settled.model}@{settled.alias} points at the pinned v{settled.version} again"
        closed = ""
        if self.pull_requests is not None:
            closed = self.pull_requests.close_open(
                branch, base, f"Withdrawn by mlopsctl: {reason}.", withdrawn_body
            )
        # Deleted only if nobody moved it since it was listed.
        if not self.remote.push(
            clone, f":refs/heads/{branch}", force_with_lease=f"refs/heads/{branch}:{remote_head}"
        ):
            return None  # another writer proposes something new there; the next pass decides
        del branches[branch]
        what = f"closed {closed} and " if closed else ""
        return Outcome(
            settled.environment,
            OutcomeKind.WITHDRAWN,
            [],
            f"{what}deleted branch {branch}: {reason}",
            branch=branch,
            pull_request=closed,
            key=settled.model,
        )

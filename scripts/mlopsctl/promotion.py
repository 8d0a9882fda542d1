"""The sync loop: desired pins (registry) -> plan -> gates -> edit -> validate -> commit -> push.

Level-triggered and idempotent: a run compares what the registry's aliases want with what Git
pins, so running it twice makes no second commit, and a run killed anywhere leaves nothing but
what a completed push landed.
"""

from __future__ import annotations

import difflib
import random
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlopsctl import gitops, inventory, model_review
from mlopsctl.config import Config, EnvironmentPolicy, load_config
from mlopsctl.errors import MlopsctlError
from mlopsctl.gates import nothing_pinned, refusals, uncompared
from mlopsctl.github import PullRequests
from mlopsctl.kustomize import affected_roots
from mlopsctl.pins import VERSION, check_field, find_pins, set_image, set_model_version
from mlopsctl.registry import ModelVersion, Registry
from mlopsctl.toolchain import Toolchain
from mlopsctl.validation import validate


class Edit:
    """One pin to move in one file of one environment, and how to say so in a commit."""

    environment: str
    file: str
    verb: str  # names the commit ("promote(local): ...") and the branch
    key: str  # what the branch is for: the model or the image

    def apply(self, text: str) -> str | None:
        """The text with the pin moved, or None when it is already where it should be."""
        raise NotImplementedError

    def summary(self) -> str:
        raise NotImplementedError

    def body(self) -> str:
        return ""

    def trailers(self, mlflow_url: str) -> list[tuple[str, str]]:
        return [("Environment", self.environment)]


@dataclass(frozen=True)
class Change(Edit):
    """A model pin moved to the version its alias points at."""

    environment: str
    file: str
    model: str
    alias: str
    old: str
    new: ModelVersion
    metrics: dict[str, float]
    old_metrics: dict[str, float]
    verb: str = "promote"
    source: str = "cli"  # what asked for it: cli, rollback, webhook, reconcile
    old_run_id: str = ""
    # The two versions' signatures, for the reviewer; None when they could not be read.
    signatures: tuple[Mapping[str, Any] | None, Mapping[str, Any] | None] | None = None

    @property
    def key(self) -> str:  # type: ignore[override]
        return self.model

    def apply(self, text: str) -> str | None:
        follows = f"{self.model}@{self.alias}"
        current = [
            p for p in find_pins(text, self.file) if p.kind == "model" and p.follows == follows
        ]
        if current and current[0].value == self.new.version:
            return None  # already there (another promoter landed it)
        return set_model_version(text, self.model, self.alias, self.new.version, self.file)

    def summary(self) -> str:
        return f"{self.model} v{self.old} -> v{self.new.version}"

    def body(self) -> str:
        lines = [
            f"{self.model} v{self.new.version} (run {self.new.run_id or 'unknown'}), "
            f"following @{self.alias}; metrics new (old):"
        ]
        for metric in sorted(set(self.metrics) | set(self.old_metrics)):
            new = self.metrics.get(metric)
            old = self.old_metrics.get(metric)
            lines.append(
                f"  {metric}: {'-' if new is None else f'{new:.6g}'} "
                f"({'-' if old is None else f'{old:.6g}'})"
            )
        return "\n".join(lines)

    def review(self, files: tuple[str, ...]) -> model_review.PinMove:
        """What the move means, worded as `mlopsctl diff` words it (PR bodies use it)."""
        known = self.signatures is not None
        old_signature, new_signature = self.signatures or (None, None)
        before = (
            model_review.VersionFacts(self.old, exists=False, problem="no version pinned")
            if nothing_pinned(self.old)
            else model_review.VersionFacts(
                self.old, True, self.old_run_id, self.old_metrics, old_signature, known
            )
        )
        return model_review.PinMove(
            self.environment,
            self.model,
            self.alias,
            self.old,
            self.new.version,
            files,
            before,
            model_review.VersionFacts(
                self.new.version, True, self.new.run_id, self.metrics, new_signature, known
            ),
        )

    def trailers(self, mlflow_url: str) -> list[tuple[str, str]]:
        return [
            ("Model", self.model),
            ("Model-Version", self.new.version),
            ("Previous-Version", self.old),
            ("Run-Id", self.new.run_id or "unknown"),
            ("Source", self.source),
            ("Environment", self.environment),
            ("MLflow-Url", f"{mlflow_url}/#/models/{self.model}/versions/{self.new.version}"),
        ]


@dataclass(frozen=True)
class ImageChange(Edit):
    """An images: entry moved to a new tag, or to a digest."""

    environment: str
    file: str
    image: str
    old: str
    tag: str | None = None
    digest: str | None = None
    verb: str = "set-image"

    @property
    def key(self) -> str:  # type: ignore[override]
        return self.image

    @property
    def new(self) -> str:
        return self.tag if self.tag is not None else f"@{self.digest}"

    def apply(self, text: str) -> str | None:
        current = [
            p for p in find_pins(text, self.file) if p.kind == "image" and p.follows == self.image
        ]
        if current and current[0].value == self.new:
            return None
        return set_image(text, self.image, tag=self.tag, digest=self.digest, path=self.file)

    def summary(self) -> str:
        return f"{self.image} {self.old} -> {self.new}"

    def trailers(self, mlflow_url: str) -> list[tuple[str, str]]:
        return [
            ("Image", self.image),
            ("Image-Version", self.new),
            ("Previous-Image-Version", self.old),
            ("Environment", self.environment),
        ]


@dataclass
class Outcome:
    environment: str
    changes: Sequence[Edit]
    result: str
    ok: bool = True
    diff: str = ""
    commit: str = ""
    branch: str = ""
    pull_request: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused and all(outcome.ok for outcome in self.outcomes)


def plan(
    pins: Sequence[inventory.LocatedPin],
    registry: Registry,
    config: Config,
    source: str = "cli",
    compare_with_pinned: bool = True,
) -> tuple[list[Change], list[str], list[str]]:
    """(changes that pass their gates, refusals, notes) for the given model pins."""
    changes: list[Change] = []
    refused: list[str] = []
    notes: list[str] = []
    for located in pins:
        environment = located.environment or ""
        policy = config.promotion.for_environment(environment)
        target = registry.version_by_alias(located.model, located.alias)
        where = f"{environment}: {located.model}@{located.alias}"
        if target is None:
            nothing_yet = " (none promoted yet)" if nothing_pinned(located.pin.value) else ""
            notes.append(
                f"{where}: the alias does not exist in MLflow; "
                f"pin left at v{located.pin.value}{nothing_yet}"
            )
            continue
        if target.version == located.pin.value:
            continue
        metrics = registry.run_metrics(target.run_id)
        gates = policy.gates
        signature = (
            registry.signature(located.model, target.version) if gates.require_signature else None
        )
        # A pin of 0 records that nothing was promoted yet: there is no version 0 to ask about.
        old = (
            None
            if nothing_pinned(located.pin.value)
            else registry.version(located.model, located.pin.value)
        )
        old_metrics = registry.run_metrics(old.run_id) if old is not None else {}
        reasons = refusals(
            gates,
            target,
            metrics,
            signature is not None,
            old_metrics
            if old is not None and gates.not_worse_than and compare_with_pinned
            else None,
        )
        skipped = uncompared(gates, target, located.pin.value) if compare_with_pinned else None
        if skipped is not None and f"{where}: {skipped}" not in notes:
            notes.append(f"{where}: {skipped}")
        if reasons:
            refused.extend(f"{where} -> v{target.version} refused: {reason}" for reason in reasons)
            continue
        changes.append(
            Change(
                environment,
                located.file,
                located.model,
                located.alias,
                located.pin.value,
                target,
                metrics,
                old_metrics,
                source=source,
                old_run_id=old.run_id if old is not None else "",
                # Only pull requests show them; a direct commit does not pay for the reads.
                signatures=_signatures(registry, located.model, old, target, signature)
                if policy.mode == "pull-request"
                else None,
            )
        )
    return changes, refused, notes


def _signatures(
    registry: Registry,
    model: str,
    old: ModelVersion | None,
    new: ModelVersion,
    new_signature: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
    """Both versions' signatures for the review text; None when the registry cannot serve them
    (that only costs the reviewer a line, so it does not stop the promotion)."""
    try:
        old_signature = registry.signature(model, old.version) if old is not None else None
        if new_signature is None:
            new_signature = registry.signature(model, new.version)
    except MlopsctlError:
        return None
    return old_signature, new_signature


def pull_request_body(edits: Sequence[Edit], diff: str, trailers: Sequence[tuple[str, str]]) -> str:
    """Model moves worded as `mlopsctl diff` words them, then the edit and the trailers."""
    files_by_key: dict[tuple[str, str], tuple[str, ...]] = {}
    for edit in edits:
        files_by_key.setdefault((edit.environment, edit.key), ())
        files_by_key[(edit.environment, edit.key)] += (edit.file,)
    reviews = [
        edit.review(files_by_key[(edit.environment, edit.key)])
        for edit in {(e.environment, e.key): e for e in edits}.values()
        if isinstance(edit, Change)
    ]
    summary = model_review.markdown(reviews) or "\n".join(
        f"- {summary}" for summary in dict.fromkeys(edit.summary() for edit in edits)
    )
    trailer_text = "\n".join(f"{key}: {value}" for key, value in trailers)
    return (
        f"{summary.rstrip()}\n\n<details><summary>The edit</summary>\n\n```diff\n{diff}```\n"
        f"</details>\n\n```\n{trailer_text}\n```\n"
    )


def commit_message(
    environment: str, edits: Sequence[Edit], mlflow_url: str
) -> tuple[str, str, list[tuple[str, str]]]:
    """Subject, body and trailers; a move pinned in several files is said once."""
    summaries = list(dict.fromkeys(edit.summary() for edit in edits))
    subject = f"{edits[0].verb}({environment}): " + "; ".join(summaries)
    body = "\n\n".join(dict.fromkeys(edit.body() for edit in edits if edit.body()))
    trailers = list(dict.fromkeys(t for edit in edits for t in edit.trailers(mlflow_url)))
    return subject, body, trailers


@dataclass
class Promoter:
    config: Config
    toolchain: Toolchain
    remote: str
    mlflow_url: str = ""
    max_attempts: int = 20
    pull_requests: PullRequests | None = None
    backoff_seconds: float = 0.2
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = print

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
        roots = affected_roots(clone, [edit.file for edit in applied], self.config.render_exclude)
        report = validate(clone, self.config, roots, self.toolchain, all_roots=False)
        findings = [
            f"{finding.file}: {finding.resource}: {finding.field}: {finding.message}"
            for finding in report.findings
        ]
        return applied, "".join(diffs), findings

    def _backoff(self, attempt: int) -> None:
        # Full jitter, capped: concurrent promoters spread out instead of colliding again.
        self.sleep(random.uniform(0, min(4.0, self.backoff_seconds * 2**attempt)))

    def promote(self, clone: Path, changes: Sequence[Edit], dry_run: bool = False) -> list[Outcome]:
        outcomes = []
        by_environment: dict[str, list[Edit]] = {}
        for change in changes:
            by_environment.setdefault(change.environment, []).append(change)
        for environment, environment_changes in by_environment.items():
            policy = self.config.promotion.for_environment(environment)
            if dry_run:
                applied, diff, findings = self._apply(clone, environment_changes)
                gitops.git(clone, "checkout", "--quiet", "--", ".")
                result = "dry run: nothing changed"
                if findings:
                    result += "; the edit would not validate:\n  " + "\n  ".join(findings)
                outcomes.append(Outcome(environment, applied, result, not findings, diff))
            elif policy.mode == "commit":
                outcomes.append(self._commit_to_branch(clone, environment, environment_changes))
            else:
                # One branch per environment and model (or image), holding all its pins.
                by_key: dict[str, list[Edit]] = {}
                for change in environment_changes:
                    by_key.setdefault(change.key, []).append(change)
                outcomes.extend(
                    self._push_promotion_branch(clone, policy, edits) for edits in by_key.values()
                )
        return outcomes

    def _commit_to_branch(self, clone: Path, environment: str, changes: Sequence[Edit]) -> Outcome:
        branch = self.config.promotion.branch
        author = gitops.Author(
            self.config.promotion.author_name, self.config.promotion.author_email
        )
        for attempt in range(self.max_attempts):
            applied, diff, findings = self._apply(clone, changes)
            if findings:
                gitops.reset_to_remote(clone, branch)
                return Outcome(
                    environment,
                    applied,
                    "not committed: the edited overlay does not validate:\n  "
                    + "\n  ".join(findings),
                    ok=False,
                    diff=diff,
                )
            if not applied:
                return Outcome(environment, [], "nothing to do: Git already pins these versions")
            subject, body, trailers = commit_message(environment, applied, self.mlflow_url)
            sha = gitops.commit(
                clone, sorted({c.file for c in applied}), subject, body, trailers, author
            )
            if gitops.push(clone, f"HEAD:refs/heads/{branch}"):
                return Outcome(
                    environment, applied, f"committed {sha[:12]} to {branch}", diff=diff, commit=sha
                )
            self.log(f"{environment}: {branch} moved on; replaying the edit on its new head")
            gitops.reset_to_remote(clone, branch)
            self._backoff(attempt)
        raise gitops.GitError(
            f"{environment}: gave up after {self.max_attempts} pushes rejected by a moving {branch}"
        )

    @staticmethod
    def _branch_proposes(clone: Path, branch: str, file: str) -> bool:
        """Whether the remote branch already holds the file exactly as edited here."""
        if not gitops.git(clone, "ls-remote", "origin", f"refs/heads/{branch}").stdout.split():
            return False
        gitops.git(clone, "fetch", "--quiet", "origin", f"refs/heads/{branch}")
        return gitops.file_at(clone, "FETCH_HEAD", file) == (clone / file).read_text()

    def _push_promotion_branch(
        self, clone: Path, policy: EnvironmentPolicy, edits: Sequence[Edit]
    ) -> Outcome:
        change = edits[0]
        base = self.config.promotion.branch
        branch = f"mlopsctl/{change.verb}/{policy.environment}/{change.key}"
        author = gitops.Author(
            self.config.promotion.author_name, self.config.promotion.author_email
        )
        gitops.git(clone, "checkout", "--quiet", "-B", branch, f"origin/{base}")
        try:
            applied, diff, findings = self._apply(clone, edits)
            if findings:
                return Outcome(
                    policy.environment,
                    applied,
                    "not pushed: the edited overlay does not validate:\n  " + "\n  ".join(findings),
                    ok=False,
                    diff=diff,
                )
            if not applied:
                return Outcome(
                    policy.environment,
                    [],
                    f"nothing to do: {base} already has {change.summary().split(' -> ')[-1]}",
                )
            subject, body, trailers = commit_message(policy.environment, applied, self.mlflow_url)
            if all(
                self._branch_proposes(clone, branch, file) for file in {e.file for e in applied}
            ):
                result = f"branch {branch} already proposes {change.summary()}"
                sha = ""
            else:
                sha = gitops.commit(
                    clone, sorted({e.file for e in applied}), subject, body, trailers, author
                )
                # The promotion branch belongs to mlopsctl: it is rebuilt from the base each time.
                gitops.git(
                    clone, "push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{branch}"
                )
                result = f"pushed {sha[:12]} to branch {branch}"
            # Also when the branch was already there: a run killed after its push left no PR.
            pull_request = ""
            if self.pull_requests is not None:
                pull_request = self.pull_requests.open_or_update(
                    branch, base, subject, pull_request_body(applied, diff, trailers)
                )
            return Outcome(
                policy.environment,
                applied,
                result,
                diff=diff,
                commit=sha,
                branch=branch,
                pull_request=pull_request,
            )
        finally:
            gitops.git(clone, "checkout", "--quiet", "--force", base)


# Plans edits on a clone, with the configuration read from that clone.
Planner = Callable[[Path, Config], tuple[Sequence[Edit], list[str], list[str]]]


@dataclass(frozen=True)
class Landing:
    """How edits land: for real or as a dry run, with what patience, and where PRs are opened."""

    dry_run: bool = False
    max_attempts: int = 20
    pull_requests: PullRequests | None = None
    log: Callable[[str], None] = print


def run_edits(
    config: Config | None,
    toolchain: Toolchain,
    remote: str,
    planner: Planner,
    landing: Landing,
    mlflow_url: str = "",
    branch: str = "main",
) -> Report:
    """Plan edits on a fresh clone of `remote`, then land them; the user's checkout is not read.

    Without a `config`, the clone's own mlopsctl.yaml is used (the service works that way, so a
    policy merged to the branch applies from the next pass on) and `branch` names what to clone.
    """
    with tempfile.TemporaryDirectory(prefix="mlopsctl-") as scratch:
        clone = gitops.clone(
            remote, config.promotion.branch if config else branch, Path(scratch) / "repository"
        )
        if config is None:
            config = load_config(clone)
        edits, refused, notes = planner(clone, config)
        promoter = Promoter(
            config,
            toolchain,
            remote,
            mlflow_url,
            landing.max_attempts,
            pull_requests=landing.pull_requests,
            log=landing.log,
        )
        outcomes = promoter.promote(clone, edits, dry_run=landing.dry_run) if edits else []
    return Report(outcomes, refused, notes)


def run(
    config: Config | None,
    registry: Registry,
    toolchain: Toolchain,
    remote: str,
    landing: Landing,
    environment: str | None = None,
    model: str | None = None,
    branch: str = "main",
    source: str = "cli",
    environments: Collection[str] | None = None,
) -> Report:
    """One pass of the sync loop for the model pins matching environment and model.

    `environments`, when given, is what this writer owns: pins of any other environment are
    another promoter's to move and are not read.
    """

    def planner(clone: Path, config: Config) -> tuple[Sequence[Edit], list[str], list[str]]:
        pins = [
            located
            for located in inventory.model_pins(
                inventory.scan(clone, config.render_exclude), environment, model
            )
            if environments is None or located.environment in environments
        ]
        if not pins:
            raise MlopsctlError(
                f"no model pin in {remote} matches environment {environment or 'any'} "
                f"and model {model or 'any'}"
            )
        return plan(pins, registry, config, source=source)

    return run_edits(config, toolchain, remote, planner, landing, registry.base_url, branch)


def set_image_run(
    config: Config,
    toolchain: Toolchain,
    remote: str,
    landing: Landing,
    image: str,
    tag: str | None,
    digest: str | None,
    environment: str | None = None,
) -> Report:
    """Point every marked images: entry for `image` (in one or all environments) at tag/digest."""

    def planner(clone: Path, config: Config) -> tuple[Sequence[Edit], list[str], list[str]]:
        pins = [
            located
            for located in inventory.scan(clone, config.render_exclude)
            if located.pin.kind == "image"
            and located.pin.follows == image
            and located.environment is not None
            and (environment is None or located.environment == environment)
        ]
        if not pins:
            raise MlopsctlError(f"no overlay in {remote} has an image pin for {image!r}")
        edits = [
            ImageChange(
                located.environment or "", located.file, image, located.pin.value, tag, digest
            )
            for located in pins
        ]
        return edits, [], []

    return run_edits(config, toolchain, remote, planner, landing)


@dataclass
class Rollback:
    environment: str
    model: str
    alias: str
    pinned: str
    target: str
    report: Report


def previous_pin(clone: Path, located: inventory.LocatedPin) -> str | None:
    """The value this pin had before its current one, from the file's git history."""
    for revision in gitops.log_of(clone, located.file):
        text = gitops.file_at(clone, revision, located.file)
        if text is None:
            continue
        values = [
            pin.value
            for pin in find_pins(text, located.file)
            if pin.kind == "model" and pin.follows == located.pin.follows
        ]
        if values and values[0] != located.pin.value:
            return values[0]
    return None


def rollback_run(
    config: Config,
    registry: Registry,
    toolchain: Toolchain,
    remote: str,
    landing: Landing,
    environment: str,
    model: str,
    to_version: str | None = None,
) -> Rollback:
    """Move the alias `environment` follows back (the intent), then let the loop write Git."""
    moved: dict[str, str] = {}

    def planner(clone: Path, config: Config) -> tuple[Sequence[Edit], list[str], list[str]]:
        pins = inventory.model_pins(
            inventory.scan(clone, config.render_exclude), environment, model
        )
        if not pins:
            raise MlopsctlError(f"no pin for {model} in {environment}")
        aliases = sorted({located.alias for located in pins})
        if len(aliases) != 1:
            raise MlopsctlError(
                f"the pins for {model} in {environment} follow different aliases {aliases}: "
                "move each alias back in MLflow, then promote"
            )
        located = pins[0]
        target = to_version or previous_pin(clone, located)
        if target is None:
            raise MlopsctlError(
                f"{located.file}: the git history holds no earlier version of {model} to return "
                "to; pass --to VERSION"
            )
        if to_version is None and nothing_pinned(target):
            raise MlopsctlError(
                f"{located.file}: before v{located.pin.value} nothing was promoted to "
                f"{environment} (its pin was v0), so there is no earlier version to return to; "
                "pass --to VERSION"
            )
        check_field("--to", target, VERSION)
        version = registry.version(model, target)
        if version is None:
            raise MlopsctlError(f"{model} v{target} does not exist in MLflow")
        registry.set_alias(model, located.alias, target)
        moved.update(alias=located.alias, pinned=located.pin.value, target=target)
        # A rollback goes back on purpose: the "not worse than" comparison does not apply.
        return plan(pins, registry, config, source="rollback", compare_with_pinned=False)

    report = run_edits(config, toolchain, remote, planner, landing, registry.base_url)
    return Rollback(environment, model, moved["alias"], moved["pinned"], moved["target"], report)

"""What a promotion changes, and how it says so. Pure: pins and versions in, text out.

An edit is one pin to move in one file of one environment. It knows how to move the pin in a
file's text and how to word the move in a commit, a pull request and its trailers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlopsctl.base import model_review
from mlopsctl.base.markers import find_pins, set_image, set_model_version
from mlopsctl.base.registry import ModelVersion
from mlopsctl.promote.gates import nothing_pinned


class Edit:
    """One pin to move in one file of one environment, and how to say so in a commit."""

    environment: str
    file: str
    verb: str  # names the commit ("promote(local): ...") and the branch
    key: str  # what the branch is for: the model or the image
    new_value: str  # the value the pin gets

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
class ModelChange(Edit):
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

    @property
    def new_value(self) -> str:  # type: ignore[override]
        return self.new.version

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

    @property
    def new_value(self) -> str:  # type: ignore[override]
        return self.new

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


def branch_name(verb: str, environment: str, key: str) -> str:
    """The promotion branch of one environment and model (or image): mlopsctl owns it."""
    return f"mlopsctl/{verb}/{environment}/{key}"


# A pull request body records what it proposes, so a later pass can tell whether a pull request
# a person closed proposed the version wanted now (and leave it closed) or an older one.
_PROPOSAL = re.compile(r"<!-- mlopsctl-proposes: (?P<key>[^\s=]+)=(?P<value>[^\s]+) -->")


def proposal_marker(edits: Sequence[Edit]) -> str:
    return f"<!-- mlopsctl-proposes: {edits[0].key}={edits[0].new_value} -->"


def proposed_value(body: str, key: str) -> str | None:
    """The value a pull request body says it proposes for `key`, if it says so."""
    for match in _PROPOSAL.finditer(body or ""):
        if match["key"] == key:
            return match["value"]
    return None


def withdrawn_body(body: str) -> str:
    """A withdrawn pull request's body: it no longer says it proposes anything, so a pull
    request closed by mlopsctl is not taken for one a person closed."""
    return body.replace("<!-- mlopsctl-proposes: ", "<!-- mlopsctl-withdrew: ")


def pull_request_body(edits: Sequence[Edit], diff: str, trailers: Sequence[tuple[str, str]]) -> str:
    """Model moves worded as `mlopsctl diff` words them, then the edit and the trailers."""
    files_by_key: dict[tuple[str, str], tuple[str, ...]] = {}
    for edit in edits:
        files_by_key.setdefault((edit.environment, edit.key), ())
        files_by_key[(edit.environment, edit.key)] += (edit.file,)
    reviews = [
        edit.review(files_by_key[(edit.environment, edit.key)])
        for edit in {(e.environment, e.key): e for e in edits}.values()
        if isinstance(edit, ModelChange)
    ]
    summary = model_review.markdown(reviews) or "\n".join(
        f"- {summary}" for summary in dict.fromkeys(edit.summary() for edit in edits)
    )
    trailer_text = "\n".join(f"{key}: {value}" for key, value in trailers)
    return (
        f"{summary.rstrip()}\n\n<details><summary>The edit</summary>\n\n```diff\n{diff}```\n"
        f"</details>\n\n```\n{trailer_text}\n```\n{proposal_marker(edits)}\n"
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

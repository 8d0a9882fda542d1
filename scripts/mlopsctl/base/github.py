"""Pull requests on GitHub, through its REST API: one open PR per promotion branch, and one
mlopsctl comment per pull request, updated in place."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlopsctl.base.errors import GitHubError, MlopsctlError

API_VERSION = "2022-11-28"
_SLUG = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_REMOTE = re.compile(r"github\.com[:/](?P<slug>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?$")


def repository_slug(remote: str, configured: str | None) -> str | None:
    """owner/name from configuration, else from a github.com remote URL."""
    if configured:
        if not _SLUG.match(configured):
            raise GitHubError(f"GITHUB_REPOSITORY {configured!r} is not owner/name")
        return configured
    match = _REMOTE.search(remote)
    return match["slug"] if match else None


@dataclass(frozen=True)
class PullRequest:
    number: int
    state: str  # open or closed
    merged: bool
    body: str
    url: str


@dataclass(frozen=True)
class PullRequests:
    api_url: str
    repository: str  # owner/name
    token: str = field(repr=False)  # never in a log or a traceback
    timeout_seconds: float = 15.0

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.api_url.rstrip('/')}/repos/{self.repository}{path}",
            data=json.dumps(payload).encode() if payload is not None else None,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:300]
            raise GitHubError(
                f"GitHub refused {method} {path}: HTTP {error.code}: {detail}", error.code
            ) from error
        except (urllib.error.URLError, TimeoutError, ValueError) as error:
            raise GitHubError(
                f"GitHub API at {self.api_url} failed for {method} {path}: {error}"
            ) from error

    def open_or_update(self, branch: str, base: str, title: str, body: str) -> str:
        """The URL of the one open pull request from `branch`, created or brought up to date."""
        existing = self._from_branch(branch, base, "open")
        if not existing:
            try:
                created = self._call(
                    "POST", "/pulls", {"title": title, "head": branch, "base": base, "body": body}
                )
                return str(created["html_url"])
            except GitHubError as error:
                # 422: another writer opened it between the search and this request; found
                # again, it is brought up to date like one found the first time.
                if error.status != 422:
                    raise
                existing = self._from_branch(branch, base, "open")
                if not existing:
                    raise
        updated = self._call(
            "PATCH", f"/pulls/{existing[-1].number}", {"title": title, "body": body}
        )
        return str(updated["html_url"])

    def _from_branch(self, branch: str, base: str, state: str) -> list[PullRequest]:
        owner = self.repository.split("/")[0]
        query = urllib.parse.urlencode(
            {"head": f"{owner}:{branch}", "base": base, "state": state, "per_page": 100}
        )
        found = self._call("GET", f"/pulls?{query}")
        if not isinstance(found, list):
            raise GitHubError("GitHub answered the pull request search with something not a list")
        try:
            return sorted(
                (
                    PullRequest(
                        int(pull["number"]),
                        str(pull["state"]),
                        bool(pull.get("merged_at")),
                        str(pull.get("body") or ""),
                        str(pull["html_url"]),
                    )
                    for pull in found
                ),
                key=lambda pull: pull.number,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise GitHubError(f"GitHub answered the pull requests of {branch} unusably") from error

    def latest(self, branch: str, base: str) -> PullRequest | None:
        """The newest pull request from `branch` into `base`, open or closed."""
        pulls = self._from_branch(branch, base, "all")
        return pulls[-1] if pulls else None

    def close_open(
        self, branch: str, base: str, comment: str, rewrite_body: Callable[[str], str]
    ) -> str:
        """Close every open pull request from `branch`, saying why and with its body rewritten;
        their URLs, or ""."""
        closed = []
        for pull in self._from_branch(branch, base, "open"):
            self._call("POST", f"/issues/{pull.number}/comments", {"body": comment})
            self._call(
                "PATCH",
                f"/pulls/{pull.number}",
                {"state": "closed", "body": rewrite_body(pull.body)},
            )
            closed.append(pull.url)
        return ", ".join(closed)

    def upsert_comment(self, number: int, marker: str, body: str) -> str:
        """The URL of the one comment on pull request `number` that starts with `marker`,
        created or replaced by `body` (so each push updates it instead of adding another)."""
        if not body.startswith(marker):
            raise GitHubError("a comment to keep up to date must start with its marker")
        page = 1
        while True:
            comments = self._call("GET", f"/issues/{number}/comments?per_page=100&page={page}")
            if not isinstance(comments, list):
                raise GitHubError("GitHub answered the comment listing with something not a list")
            for comment in comments:
                if isinstance(comment, dict) and str(comment.get("body", "")).startswith(marker):
                    updated = self._call(
                        "PATCH", f"/issues/comments/{comment['id']}", {"body": body}
                    )
                    return str(updated["html_url"])
            if len(comments) < 100:
                break
            page += 1
        created = self._call("POST", f"/issues/{number}/comments", {"body": body})
        return str(created["html_url"])


def pull_requests_from_environment(remote: str) -> PullRequests | None:
    """GitHub pull requests when $GITHUB_TOKEN is set; None means: push the branch, print the rest.

    $GITHUB_API_URL (GitHub Enterprise) and $GITHUB_REPOSITORY (owner/name, else read from a
    github.com remote) complete it, as in GitHub Actions.
    """
    token = os.environ.get("GITHUB_TOKEN")
    if not token:
        return None
    slug = repository_slug(remote, os.environ.get("GITHUB_REPOSITORY"))
    if slug is None:
        raise MlopsctlError(
            f"GITHUB_TOKEN is set but {remote!r} is not a github.com remote: set GITHUB_REPOSITORY"
        )
    return PullRequests(os.environ.get("GITHUB_API_URL", "https://api.github.com"), slug, token)

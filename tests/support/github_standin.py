"""A thin stand-in for the GitHub REST endpoints mlopsctl uses for pull requests and comments.

GitHub cannot be reached from the test machine, so this serves, on loopback, exactly:
GET /repos/{owner}/{name}/pulls?head=&base=&state=(open|closed|all),
POST /repos/{owner}/{name}/pulls (422 when the branch has an open one),
PATCH /repos/{owner}/{name}/pulls/{number},
GET and POST /repos/{owner}/{name}/issues/{number}/comments (paged by per_page and page)
and PATCH /repos/{owner}/{name}/issues/comments/{id}, with GitHub's field names, and checks
the token.
"""

from __future__ import annotations

import http.server
import json
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.loopback import QuietHandler, serving

TOKEN = "test-token"
REPOSITORY = "example-org/mlops-platform"


@dataclass
class GitHubStandIn:
    url: str = ""
    pulls: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)  # every pull request's
    requests: list[tuple[str, str]] = field(default_factory=list)
    # Run (once each) just before a pull request is created: another writer acting in between.
    before_create: list[Callable[[GitHubStandIn], None]] = field(default_factory=list)

    def open_pull(self, head: str, base: str, title: str, body: str) -> dict[str, Any]:
        number = len(self.pulls) + 1
        pull = {
            "number": number,
            "state": "open",
            "merged_at": None,
            "title": title,
            "body": body,
            "head": {"ref": head},
            "base": {"ref": base},
            "html_url": f"https://github.example.test/{REPOSITORY}/pull/{number}",
        }
        self.pulls.append(pull)
        return pull


def _handler(state: GitHubStandIn) -> type[http.server.BaseHTTPRequestHandler]:
    prefix = f"/repos/{REPOSITORY}/pulls"
    issues = f"/repos/{REPOSITORY}/issues/"

    class Handler(QuietHandler):
        def _answer(self, status: int, payload: Any) -> None:
            self.reply(status, json.dumps(payload).encode())

        def _authorised(self) -> bool:
            state.requests.append((self.command, self.path))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._answer(401, {"message": "Bad credentials"})
                return False
            return True

        def _json(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length", "0"))
            return dict(json.loads(self.rfile.read(length)))

        def do_GET(self) -> None:
            if not self._authorised():
                return
            parsed = urllib.parse.urlparse(self.path)
            query = dict(urllib.parse.parse_qsl(parsed.query))
            if parsed.path.startswith(issues):
                number = int(parsed.path.removeprefix(issues).split("/")[0])
                size, page = int(query.get("per_page", "30")), int(query.get("page", "1"))
                on_pull = [c for c in state.comments if c["issue"] == number]
                self._answer(200, on_pull[(page - 1) * size : page * size])
                return
            owner = REPOSITORY.split("/")[0]
            matching = [
                pull
                for pull in state.pulls
                if f"{owner}:{pull['head']['ref']}" == query.get("head")
                and pull["base"]["ref"] == query.get("base")
                and query.get("state", "open") in (pull["state"], "all")
            ]
            self._answer(200, matching)

        def do_POST(self) -> None:
            if not self._authorised():
                return
            payload = self._json()
            if self.path.startswith(issues):
                identifier = len(state.comments) + 1
                comment = {
                    "id": identifier,
                    "issue": int(self.path.removeprefix(issues).split("/")[0]),
                    "body": payload["body"],
                    "html_url": f"https://github.example.test/comment/{identifier}",
                }
                state.comments.append(comment)
                self._answer(201, comment)
                return
            while state.before_create:
                state.before_create.pop(0)(state)
            if any(
                pull["state"] == "open"
                and pull["head"]["ref"] == payload["head"]
                and pull["base"]["ref"] == payload["base"]
                for pull in state.pulls
            ):
                # GitHub's answer to a second open pull request from one branch.
                owner = REPOSITORY.split("/")[0]
                self._answer(
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [
                            {
                                "resource": "PullRequest",
                                "code": "custom",
                                "message": "A pull request already exists for "
                                f"{owner}:{payload['head']}.",
                            }
                        ],
                    },
                )
                return
            pull = state.open_pull(
                payload["head"], payload["base"], payload["title"], payload["body"]
            )
            self._answer(201, pull)

        def do_PATCH(self) -> None:
            if not self._authorised():
                return
            if self.path.startswith(issues + "comments/"):
                comment = state.comments[int(self.path.rsplit("/", 1)[1]) - 1]
                comment.update(self._json())
                self._answer(200, comment)
                return
            number = int(self.path.removeprefix(prefix + "/"))
            pull = state.pulls[number - 1]
            pull.update(self._json())
            self._answer(200, pull)

    return Handler


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    state = GitHubStandIn()
    with serving(_handler(state)) as url:
        state.url = url
        yield state

"""The GitHub client against the loopback stand-in (tests/support/github_standin.py): one open
pull request per branch, one mlopsctl comment per pull request, and where the settings come
from."""

from __future__ import annotations

import pytest

from mlopsctl.base.errors import GitHubError, MlopsctlError
from mlopsctl.base.github import PullRequests, pull_requests_from_environment, repository_slug
from tests.support.github_standin import REPOSITORY, TOKEN, GitHubStandIn

BRANCH = "mlopsctl/promote-staging"


def client(github: GitHubStandIn, token: str = TOKEN) -> PullRequests:
    return PullRequests(github.url, REPOSITORY, token, timeout_seconds=5)


def test_repository_slug_from_configuration_or_a_github_remote() -> None:
    assert repository_slug("https://example.test/x.git", "owner/name") == "owner/name"
    assert repository_slug("git@github.com:owner/name.git", None) == "owner/name"
    assert repository_slug("https://github.com/owner/name", None) == "owner/name"
    assert repository_slug("https://gitlab.example/owner/name.git", None) is None
    with pytest.raises(GitHubError, match="not owner/name"):
        repository_slug("git@github.com:owner/name.git", "owner/name/extra")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    assert pull_requests_from_environment("git@github.com:owner/name.git") is None
    monkeypatch.setenv("GITHUB_TOKEN", "secret")
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    monkeypatch.setenv("GITHUB_API_URL", "https://github.example/api/v3")
    pulls = pull_requests_from_environment("git@github.com:owner/name.git")
    assert pulls is not None
    assert (pulls.api_url, pulls.repository) == ("https://github.example/api/v3", "owner/name")
    assert "secret" not in repr(pulls)
    with pytest.raises(MlopsctlError, match="set GITHUB_REPOSITORY"):
        pull_requests_from_environment("https://example.test/platform.git")


def test_one_open_pull_request_per_branch_created_then_updated(github: GitHubStandIn) -> None:
    pulls = client(github)
    first = pulls.open_or_update(BRANCH, "main", "Promote v1", "body one")
    second = pulls.open_or_update(BRANCH, "main", "Promote v2", "body two")
    assert first == second
    assert len(github.pulls) == 1
    assert (github.pulls[0]["title"], github.pulls[0]["body"]) == ("Promote v2", "body two")
    latest = pulls.latest(BRANCH, "main")
    assert latest is not None and (latest.state, latest.body) == ("open", "body two")
    assert pulls.latest("mlopsctl/other", "main") is None


def test_a_pull_request_opened_by_another_writer_in_between_is_updated(
    github: GitHubStandIn,
) -> None:
    github.before_create.append(
        lambda state: state.open_pull(BRANCH, "main", "theirs", "their body")
    )
    url = client(github).open_or_update(BRANCH, "main", "ours", "our body")
    assert len(github.pulls) == 1
    assert url == github.pulls[0]["html_url"]
    assert github.pulls[0]["body"] == "our body"


def test_close_open_comments_rewrites_and_closes(github: GitHubStandIn) -> None:
    pulls = client(github)
    url = pulls.open_or_update(BRANCH, "main", "Promote", "old body")
    closed = pulls.close_open(BRANCH, "main", "superseded", lambda body: body + " (superseded)")
    assert closed == url
    assert github.pulls[0]["state"] == "closed"
    assert github.pulls[0]["body"] == "old body (superseded)"
    assert [comment["body"] for comment in github.comments] == ["superseded"]
    assert pulls.close_open(BRANCH, "main", "again", lambda body: body) == ""


def test_one_comment_per_marker_kept_up_to_date(github: GitHubStandIn) -> None:
    pulls = client(github)
    pulls.open_or_update(BRANCH, "main", "Promote", "body")
    first = pulls.upsert_comment(1, "<!-- mlopsctl -->", "<!-- mlopsctl --> first")
    second = pulls.upsert_comment(1, "<!-- mlopsctl -->", "<!-- mlopsctl --> second")
    assert first == second
    assert [comment["body"] for comment in github.comments] == ["<!-- mlopsctl --> second"]
    with pytest.raises(GitHubError, match="must start with its marker"):
        pulls.upsert_comment(1, "<!-- mlopsctl -->", "no marker")


def test_a_refused_token_is_an_error_naming_the_request(github: GitHubStandIn) -> None:
    with pytest.raises(GitHubError, match=r"GitHub refused GET /pulls\?.*HTTP 401"):
        client(github, token="wrong").latest(BRANCH, "main")
    assert "wrong" not in repr(client(github, token="wrong"))

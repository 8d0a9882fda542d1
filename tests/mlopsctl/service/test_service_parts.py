"""The promoter's git credentials, hard to see from outside: a token goes to the git server as a
header (never in the URL or a message), the CLI reads it where the service does, and an SSH key
is used without prompts. (Its shutdown order is tested in test_reconciler.py.)"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlopsctl.base import git
from tests.support.loopback import QuietHandler, serving


@pytest.fixture
def recording_git_server() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.reply(403, b"")

    with serving(Handler) as url:
        yield f"{url}/platform.git", seen


def test_a_token_reaches_the_git_server_as_a_header_not_in_the_url(recording_git_server):
    url, seen = recording_git_server
    credentials = git.Credentials(token="s3cr3t-token")
    completed = git.git_at("ls-remote", url, timeout_seconds=20, credentials=credentials)
    assert completed.returncode != 0  # the stand-in refuses; what matters is what it was sent
    expected = "Basic " + base64.b64encode(b"x-access-token:s3cr3t-token").decode()
    assert expected in seen
    assert "s3cr3t-token" not in completed.stderr
    assert "s3cr3t-token" not in repr(credentials)
    # Carried by the call, not left behind: the next command without them sends no header.
    git.git_at("ls-remote", url, timeout_seconds=20)
    assert seen[-1] == ""


def test_the_cli_takes_the_token_from_the_environment_as_the_service_does(
    recording_git_server, cli, monkeypatch: pytest.MonkeyPatch
):
    from tests.support.paths import REPOSITORY

    url, seen = recording_git_server
    monkeypatch.setenv("MLOPSCTL_GIT_TOKEN", "workflow-token")
    result = cli("set-image", "streamlit", "9.9.9", "--repo", str(REPOSITORY), "--remote", url)
    assert result.exit_code == 4  # the stand-in refuses the clone
    assert "Basic " + base64.b64encode(b"x-access-token:workflow-token").decode() in seen
    assert "workflow-token" not in result.stderr


def test_an_ssh_key_file_is_used_without_prompts(tmp_path: Path):
    key = tmp_path / "key with space"
    credentials = git.Credentials(
        ssh_key_file=str(key), known_hosts_file=str(tmp_path / "known_hosts")
    )
    command = git._environment(credentials=credentials)["GIT_SSH_COMMAND"]
    assert f"-i '{key}'" in command
    assert "BatchMode=yes" in command and "StrictHostKeyChecking=yes" in command
    assert f"-i '{key}'" not in git._environment().get("GIT_SSH_COMMAND", "")

"""The local run's git host, used as the promoter and Argo CD's stand-in use it: real git over
real TLS, a CA of the test's own, loopback only."""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlopsctl.base import git
from mlopsctl.base.errors import LocalRunError
from mlopsctl.localrun import certificates, githost
from tests.support.pki import Pki, make_pki

TOKEN = "local-run-token-7f3a"
URL_PATH = "/example-org/mlops-platform.git"
# An address of the loopback range no other test uses, so port 443 there is free.
NAME_CHECK_ADDRESS = "127.0.0.77"
TIMEOUT = 60


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), ["github.com"])


def _environment(home: Path, ca_file: Path | None) -> dict[str, str]:
    """git as a pod runs it: no user or system config, no prompts, no proxy, English."""
    environment = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
    }
    if ca_file is not None:
        environment["GIT_SSL_CAINFO"] = str(ca_file)
    return environment


def _git(
    *arguments: str, environment: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "http.sslVerify=true", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _authorization(token: str) -> str:
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return f"http.extraHeader=Authorization: Basic {basic}"


def _head(bare: Path) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(bare), "rev-parse", "refs/heads/main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _commit(clone: Path, environment: dict[str, str], name: str, content: bytes) -> str:
    (clone / name).write_bytes(content)
    assert _git("add", name, environment=environment, cwd=clone).returncode == 0
    committed = _git(
        "-c",
        "user.name=Promoter",
        "-c",
        "user.email=promoter@example.org",
        "commit",
        "--quiet",
        "-m",
        f"add {name}",
        environment=environment,
        cwd=clone,
    )
    assert committed.returncode == 0, committed.stderr
    return _git("rev-parse", "HEAD", environment=environment, cwd=clone).stdout.strip()


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """A bare repository with one commit on main, as the run seeds it."""
    repository = tmp_path / "mlops-platform.git"
    seed = tmp_path / "seed"
    environment = _environment(tmp_path, None)
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(repository)], check=True)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(seed)], check=True)
    _commit(seed, environment, "README.md", b"# the platform\n")
    pushed = _git("push", "--quiet", str(repository), "main", environment=environment, cwd=seed)
    assert pushed.returncode == 0, pushed.stderr
    return repository


@dataclass
class Served:
    url: str
    log: list[str]
    stop: threading.Event
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.url.split(":")[2].split("/")[0])


def _eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(pki: Pki, bare: Path) -> Iterator[Served]:
    """`serve` in a thread of this process, on a free loopback port."""
    port = _free_port()
    ready, stop = threading.Event(), threading.Event()
    log: list[str] = []
    thread = threading.Thread(
        target=githost.serve,
        args=(("127.0.0.1", port), pki.server.certificate, pki.server.key, {URL_PATH: bare}),
        kwargs={"token": TOKEN, "ready": ready, "stop": stop, "log": log.append},
        daemon=True,
    )
    thread.start()
    assert ready.wait(10), "the git host did not start listening"
    try:
        yield Served(f"https://127.0.0.1:{port}{URL_PATH}", log, stop, thread)
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the git host did not stop"


def test_clone_and_ls_remote_over_verified_tls(
    served: Served, pki: Pki, bare: Path, tmp_path: Path
) -> None:
    environment = _environment(tmp_path, pki.authority.certificate)
    started = time.perf_counter()
    cloned = _git("clone", "--quiet", served.url, str(tmp_path / "clone"), environment=environment)
    elapsed = time.perf_counter() - started
    assert cloned.returncode == 0, cloned.stderr
    assert (tmp_path / "clone" / "README.md").read_text() == "# the platform\n"
    listed = _git("ls-remote", "--heads", served.url, "main", environment=environment)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [_head(bare), "refs/heads/main"]
    # GitHub serves the same repository without ".git".
    plain = _git("ls-remote", served.url.removesuffix(".git"), environment=environment)
    assert plain.returncode == 0 and _head(bare) in plain.stdout
    print(f"clone of a one-commit repository: {elapsed:.3f} s")


def test_push_without_the_token_is_refused(
    served: Served, pki: Pki, bare: Path, tmp_path: Path
) -> None:
    environment = _environment(tmp_path, pki.authority.certificate)
    clone = tmp_path / "clone"
    assert _git("clone", "--quiet", served.url, str(clone), environment=environment).returncode == 0
    before = _head(bare)
    _commit(clone, environment, "change.txt", b"unauthorised\n")

    anonymous = _git("push", "origin", "main", environment=environment, cwd=clone)
    wrong = _git(
        "-c",
        _authorization("not-the-token"),
        "push",
        "origin",
        "main",
        environment=environment,
        cwd=clone,
    )

    for refused in (anonymous, wrong):
        assert refused.returncode != 0
        assert "could not read Username" in refused.stderr or "401" in refused.stderr
    assert _head(bare) == before
    assert any(" 401 " in line and "git-receive-pack" in line for line in served.log)


def test_push_with_the_token_as_gitops_sends_it_lands(
    served: Served, pki: Pki, bare: Path, tmp_path: Path
) -> None:
    environment = _environment(tmp_path, pki.authority.certificate)
    clone = tmp_path / "clone"
    assert _git("clone", "--quiet", served.url, str(clone), environment=environment).returncode == 0
    commit = _commit(clone, environment, "pin.yaml", b"version: 7\n")

    started = time.perf_counter()
    pushed = _git(
        "-c", _authorization(TOKEN), "push", "origin", "main", environment=environment, cwd=clone
    )
    elapsed = time.perf_counter() - started

    assert pushed.returncode == 0, pushed.stderr
    assert _head(bare) == commit
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert not any(TOKEN in line or basic in line for line in served.log)
    assert any("POST" in line and "git-receive-pack 200" in line for line in served.log)
    print(f"push of one small commit: {elapsed:.3f} s")


def test_the_promoter_git_code_clones_and_pushes(
    served: Served, pki: Pki, bare: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mlopsctl's own git functions (what the promoter and /readyz run) against the host."""
    for name, value in _environment(tmp_path, pki.authority.certificate).items():
        monkeypatch.setenv(name, value)
    remote = git.Remote(served.url, git.Credentials(token=TOKEN))
    listed = git.git_at(
        "ls-remote",
        "--heads",
        served.url,
        "main",
        timeout_seconds=15,
        credentials=remote.credentials,
    )
    assert listed.returncode == 0, listed.stderr
    clone = remote.clone("main", tmp_path / "promoter")
    (clone / "pin.yaml").write_text("version: 8\n")
    commit = git.commit(
        clone,
        ["pin.yaml"],
        "Promote",
        "",
        [("Model", "iris@8")],
        git.Author("mlopsctl", "mlopsctl@example.org"),
    )
    assert remote.push(clone, "HEAD:refs/heads/main")
    assert _head(bare) == commit


def test_an_unknown_repository_is_not_found(served: Served, pki: Pki, tmp_path: Path) -> None:
    environment = _environment(tmp_path, pki.authority.certificate)
    url = served.url.replace("mlops-platform", "another-repository")
    listed = _git("ls-remote", url, environment=environment)
    assert listed.returncode != 0
    assert "not found" in listed.stderr
    assert any(" 404 " in line and "another-repository" in line for line in served.log)


def test_a_client_without_the_run_ca_refuses_the_certificate(
    served: Served, tmp_path: Path
) -> None:
    environment = _environment(tmp_path, certificates.SYSTEM_BUNDLE)
    cloned = _git("clone", "--quiet", served.url, str(tmp_path / "clone"), environment=environment)
    assert cloned.returncode != 0
    assert "certificate" in cloned.stderr.lower()
    assert not (tmp_path / "clone").exists()
    # The server learns of the refusal (an alert, or a hang-up with no request) just after git
    # has exited.
    refusals = ("TLS handshake failed", "closed the connection without a request")
    assert _eventually(lambda: any(words in line for line in served.log for words in refusals))
    assert not any("GET" in line for line in served.log)


def test_http_answers_name_what_is_wrong(served: Served, pki: Pki) -> None:
    context = ssl.create_default_context(cafile=str(pki.authority.certificate))
    port = served.port

    def request(
        method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    # The dumb protocol (plain files of the repository) is not served.
    assert request("GET", f"{URL_PATH}/HEAD")[0] == 404
    assert request("GET", f"{URL_PATH}/config")[0] == 404
    assert request("GET", f"{URL_PATH}/info/refs")[0] == 404
    status, headers, _ = request("GET", f"{URL_PATH}/info/refs?service=git-receive-pack")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    status, _, _ = request("GET", f"{URL_PATH}/git-upload-pack")
    assert status == 405
    too_big = {"Content-Length": str(githost.MAX_REQUEST_BODY_BYTES + 1)}
    assert request("POST", f"{URL_PATH}/git-upload-pack", too_big)[0] == 413
    status, _, body = request("GET", f"{URL_PATH}/info/refs?service=git-upload-pack")
    assert status == 200 and b"# service=git-upload-pack" in body


def test_a_concurrent_clone_and_a_large_push_both_finish(
    served: Served, pki: Pki, bare: Path, tmp_path: Path
) -> None:
    environment = _environment(tmp_path, pki.authority.certificate)
    writer = tmp_path / "writer"
    assert (
        _git("clone", "--quiet", served.url, str(writer), environment=environment).returncode == 0
    )
    # Larger than git's 1 MiB post buffer: the pack goes as a chunked, streamed request body.
    commit = _commit(writer, environment, "weights.bin", os.urandom(6 * 1024 * 1024))

    started = time.perf_counter()
    push = subprocess.Popen(
        ["git", "-c", _authorization(TOKEN), "push", "--quiet", "origin", "main"],
        cwd=writer,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    clones = [
        subprocess.Popen(
            ["git", "clone", "--quiet", served.url, str(tmp_path / f"reader-{index}")],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    try:
        outcomes = [process.communicate(timeout=TIMEOUT) for process in (push, *clones)]
    finally:
        for process in (push, *clones):
            if process.poll() is None:
                process.kill()
                process.wait()
    concurrent = time.perf_counter() - started
    for process, (_, errors) in zip((push, *clones), outcomes, strict=True):
        assert process.returncode == 0, errors
    assert _head(bare) == commit

    started = time.perf_counter()
    big = _git("clone", "--quiet", served.url, str(tmp_path / "big"), environment=environment)
    clone_seconds = time.perf_counter() - started
    assert big.returncode == 0, big.stderr
    weights = (tmp_path / "big" / "weights.bin").read_bytes()
    assert weights == (writer / "weights.bin").read_bytes()
    print(
        f"6 MiB push with 2 concurrent clones: {concurrent:.3f} s; "
        f"clone of the 6 MiB repository: {clone_seconds:.3f} s"
    )


def test_stopping_ends_idle_keep_alive_connections_at_once(served: Served, pki: Pki) -> None:
    context = ssl.create_default_context(cafile=str(pki.authority.certificate))
    connection = http.client.HTTPSConnection("127.0.0.1", served.port, context=context, timeout=10)
    try:
        connection.request("GET", f"{URL_PATH}/info/refs?service=git-upload-pack")
        response = connection.getresponse()
        response.read()
        assert response.status == 200 and not response.will_close
        started = time.monotonic()
        served.stop.set()
        served.thread.join(timeout=15)
        assert not served.thread.is_alive()
        # Not the socket timeout (60 s) an idle client would otherwise hold the server for.
        assert time.monotonic() - started < 5
        with pytest.raises((OSError, http.client.HTTPException)):
            connection.request("GET", f"{URL_PATH}/info/refs?service=git-upload-pack")
            connection.getresponse().read()
    finally:
        connection.close()
    assert served.log[-1] == "stopped"


@dataclass
class Process:
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def github_at_loopback_alias(pki: Pki, bare: Path, tmp_path: Path) -> Iterator[Process]:
    """The git host as the run starts it: its own process, on port 443 of an address of its
    own, with a certificate for github.com."""
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    log = tmp_path / "githost.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlopsctl.localrun.githost",
            "--listen",
            f"{NAME_CHECK_ADDRESS}:443",
            "--certificate",
            str(pki.server.certificate),
            "--key",
            str(pki.server.key),
            "--repository",
            f"{URL_PATH}={bare}",
            "--token-file",
            str(token_file),
            "--log",
            str(log),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while "listening on" not in (log.read_text() if log.exists() else ""):
            if process.poll() is not None:
                pytest.fail(f"the git host exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the git host did not start listening"
            time.sleep(0.05)
        yield Process(process, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


def test_github_dot_com_resolved_to_the_host_and_sigterm_stops_it(
    github_at_loopback_alias: Process, pki: Pki, bare: Path, tmp_path: Path
) -> None:
    environment = _environment(tmp_path, pki.bundle)
    resolve = f"http.curloptResolve=github.com:443:{NAME_CHECK_ADDRESS}"
    url = f"https://github.com{URL_PATH}"
    clone = tmp_path / "clone"

    started = time.perf_counter()
    cloned = _git("-c", resolve, "clone", "--quiet", url, str(clone), environment=environment)
    clone_seconds = time.perf_counter() - started
    assert cloned.returncode == 0, cloned.stderr
    commit = _commit(clone, environment, "pin.yaml", b"version: 9\n")
    started = time.perf_counter()
    pushed = _git(
        "-c",
        resolve,
        "-c",
        _authorization(TOKEN),
        "push",
        "origin",
        "main",
        environment=environment,
        cwd=clone,
    )
    push_seconds = time.perf_counter() - started
    assert pushed.returncode == 0, pushed.stderr
    assert _head(bare) == commit

    host = github_at_loopback_alias
    host.process.send_signal(signal.SIGTERM)
    assert host.process.wait(timeout=30) == 0
    log = host.log.read_text()
    assert "git-receive-pack 200" in log and log.rstrip().endswith("stopped")
    assert TOKEN not in log
    print(f"github.com via curloptResolve: clone {clone_seconds:.3f} s, push {push_seconds:.3f} s")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a mount namespace",
)
def test_a_pod_reaches_github_dot_com_through_its_hosts_file_and_ca_bundle(
    github_at_loopback_alias: Process, pki: Pki, bare: Path, tmp_path: Path
) -> None:
    """As a pod sees it: /etc/hosts names the git host, the run's bundle is the system bundle,
    and git runs with no TLS option at all."""
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{NAME_CHECK_ADDRESS} github.com\n")
    script = f"""
        set -e
        mount --bind {hosts} /etc/hosts
        mount --bind {pki.bundle} {certificates.SYSTEM_BUNDLE}
        # Never let a mistake here become a lookup of the real github.com.
        getent ahostsv4 github.com | grep -q '^{NAME_CHECK_ADDRESS} ' || exit 97
        git clone --quiet https://github.com{URL_PATH} {tmp_path / "clone"}
        git -C {tmp_path / "clone"} rev-parse HEAD
    """
    environment = _environment(tmp_path, None)
    completed = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == _head(bare)


def test_the_command_line_names_bad_input(tmp_path: Path, pki: Pki) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    arguments = [
        "--listen",
        "127.0.0.1:0",
        "--certificate",
        str(pki.server.certificate),
        "--key",
        str(pki.server.key),
        "--token-file",
        str(token),
    ]
    assert githost.main([*arguments, "--repository", f"{URL_PATH}={tmp_path}"]) == 2
    assert githost.main([*arguments, "--repository", "no-equals-sign"]) == 2
    with pytest.raises(LocalRunError, match="not a bare git repository"):
        githost.checked_repositories({URL_PATH: tmp_path})
    with pytest.raises(LocalRunError, match="URL path"):
        githost.checked_repositories({"/../etc.git": tmp_path})
    with pytest.raises(LocalRunError, match="ADDRESS:PORT"):
        githost.parse_listen("github.com")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(LocalRunError, match="is empty"):
        githost.read_token(tmp_path / "empty")

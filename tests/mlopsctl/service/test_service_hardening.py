"""The promoter's webhook endpoint against requests no MLflow would send, and secrets kept out
of reprs. The server is the real one on loopback; raw sockets send what HTTP clients refuse to
(non-ASCII header bytes, which the server reads as ISO-8859-1, as http.server does)."""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import pkgutil
import re
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import mlopsctl
from mlopsctl import service
from mlopsctl.base import git
from mlopsctl.base.github import PullRequests
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.base.toolchain import resolve
from mlopsctl.promote import flows, landing
from mlopsctl.service import webhooks
from mlopsctl.validate.engine import edit_findings
from tests.support.github_standin import REPOSITORY as GITHUB_REPOSITORY
from tests.support.github_standin import TOKEN as GITHUB_TOKEN
from tests.support.github_standin import GitHubStandIn
from tests.support.paths import TOOLS_DIR
from tests.support.promoter import SECRET, metric_total, signed, wait_for
from tests.support.trees import minimal_remote

EVENT = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "data": {"name": "iris", "alias": "champion", "version": "2"},
    }
).encode()
# The `mlopsctl serve` subprocess fixture of the service tests, used here as it is there.
# Put in every body below: a refusal's log line must never carry it.
BODY_MARKER = "body-marker-that-must-not-be-logged"


@dataclass
class InProcessPromoter:
    """`mlopsctl serve`'s Service on a loopback port, with passes that only count themselves."""

    service: service.Service
    log: list[str]
    passes: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    def get(self, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return response.status, response.read().decode()

    def metric(self, name: str) -> float:
        _status, text = self.get("/metrics")
        return metric_total(text, name)

    def webhook_count(self, result: str) -> float:
        return self.metric(f'mlopsctl_webhook_requests_total{{result="{result}"}}')

    def refusals(self) -> list[str]:
        return [line for line in self.log if line.startswith("webhook refused")]


@pytest.fixture
def promoter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[InProcessPromoter]:
    passes: list[str] = []

    def counted_pass(*_args: object, source: str, **_kwargs: object) -> landing.Report:
        passes.append(source)
        return landing.Report()

    monkeypatch.setattr(flows, "run", counted_pass)
    log: list[str] = []
    settings = service.Settings(
        remote=str(minimal_remote(tmp_path)),
        branch="main",
        registry=MlflowRegistry("http://127.0.0.1:9"),
        toolchain=resolve(TOOLS_DIR),
        webhook_secret=SECRET,
        environments=("local",),
        interval_seconds=3600,
        log=log.append,
    )
    running = service.Service(settings, ("127.0.0.1", 0))
    running.start()
    try:
        # The startup pass runs on the worker thread: the tests count passes from after it.
        wait_for(lambda: passes == ["reconcile"], 30, "the startup pass")
        yield InProcessPromoter(running, log, passes)
    finally:
        running.stop()


def raw_post(port: int, header_lines: list[bytes], body: bytes) -> tuple[int, dict[str, str]]:
    """POST /webhooks/mlflow with these header lines, byte for byte; the status and JSON reply."""
    request = b"".join(
        [b"POST /webhooks/mlflow HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"]
        + [line + b"\r\n" for line in header_lines]
        + [b"\r\n", body]
    )
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        for _ in range(1000):  # the reply is a few hundred bytes; the bound is for a broken one
            chunk = connection.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply, "the server closed the connection without an answer"
    head, _, content = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower()
    return status, json.loads(content)


def header_lines(headers: dict[str, str]) -> list[bytes]:
    # ISO-8859-1 is how http.server decodes header bytes, so a test can sign what it sends.
    return [f"{name}: {value}".encode("iso-8859-1") for name, value in headers.items()]


def signed_lines(body: bytes, **overrides: str) -> list[bytes]:
    headers = signed(body)
    headers.update(overrides)
    if webhooks.SIGNATURE_HEADER not in overrides:
        headers[webhooks.SIGNATURE_HEADER] = webhooks.signature(
            SECRET,
            headers[webhooks.DELIVERY_HEADER],
            headers[webhooks.TIMESTAMP_HEADER],
            body,
        )
    return [*header_lines(headers), f"Content-Length: {len(body)}".encode()]


def body_with_marker() -> bytes:
    return json.dumps({**json.loads(EVENT), "note": BODY_MARKER}).encode()


def assert_refusal_logged(promoter: InProcessPromoter, result: str, count: int = 1) -> None:
    refusals = [line for line in promoter.refusals() if f"({result})" in line]
    assert len(refusals) == count, promoter.log
    for line in refusals:
        assert "from 127.0.0.1" in line
        assert BODY_MARKER not in line


# --- 15: malformed requests get a JSON answer, are counted and logged, and the server serves on


@pytest.mark.parametrize(
    "length_lines",
    [
        pytest.param([b"Content-Length: \xb2"], id="superscript-two-latin-1"),
        pytest.param(["Content-Length: ²".encode()], id="superscript-two-utf-8"),
        pytest.param(["Content-Length: \u0661\u0660".encode()], id="arabic-indic-ten"),
        pytest.param([b"Content-Length: \xb9\xb2"], id="superscripts-one-two"),
        pytest.param([b"Content-Length: " + b"9" * 5000], id="over-int-digit-limit"),
        pytest.param([b"Content-Length: -1"], id="negative"),
        pytest.param([b"Content-Length: 12", b"Content-Length: 120"], id="two-lengths"),
    ],
)
def test_a_content_length_not_in_ascii_digits_gets_a_json_400(
    promoter: InProcessPromoter, length_lines: list[bytes]
):
    body = body_with_marker()
    delivery_id = str(uuid.uuid4())
    lines = header_lines(signed(body, delivery_id=delivery_id)) + length_lines
    status, answer = raw_post(promoter.service.port, lines, body)
    assert (status, answer["result"]) == (400, "malformed")
    assert "Content-Length" in answer["error"]
    assert promoter.webhook_count("malformed") == 1
    assert_refusal_logged(promoter, "malformed")
    assert repr(delivery_id) in promoter.refusals()[0]
    assert promoter.get("/healthz")[0] == 200


def test_a_non_ascii_signature_gets_a_json_401(promoter: InProcessPromoter):
    body = body_with_marker()
    # "v1,é" sent as ISO-8859-1: hmac.compare_digest raises on non-ASCII strings.
    lines = signed_lines(body, **{webhooks.SIGNATURE_HEADER: "v1,\xe9t\xe9"})
    status, answer = raw_post(promoter.service.port, lines, body)
    assert (status, answer["result"]) == (401, "bad_signature")
    assert promoter.webhook_count("bad_signature") == 1
    assert_refusal_logged(promoter, "bad_signature")
    assert promoter.passes == ["reconcile"]  # only the startup pass


@pytest.mark.parametrize(
    "timestamp",
    [
        pytest.param("\xb2", id="superscript-two"),
        pytest.param("\xb9\xb2\xb3", id="superscripts"),
        pytest.param("9" * 5000, id="over-int-digit-limit"),
    ],
)
def test_a_timestamp_not_in_ascii_digits_is_malformed_even_when_signed(
    promoter: InProcessPromoter, timestamp: str
):
    body = body_with_marker()
    lines = signed_lines(body, **{webhooks.TIMESTAMP_HEADER: timestamp})
    status, answer = raw_post(promoter.service.port, lines, body)
    assert (status, answer["result"]) == (400, "malformed")
    assert webhooks.TIMESTAMP_HEADER in answer["error"]
    assert promoter.webhook_count("malformed") == 1
    assert_refusal_logged(promoter, "malformed")


def test_a_non_ascii_delivery_id_is_malformed_even_when_signed(promoter: InProcessPromoter):
    body = body_with_marker()
    lines = signed_lines(body, **{webhooks.DELIVERY_HEADER: "d\xe9livery-\xb2"})
    status, answer = raw_post(promoter.service.port, lines, body)
    assert (status, answer["result"]) == (400, "malformed")
    assert webhooks.DELIVERY_HEADER in answer["error"]
    assert promoter.webhook_count("malformed") == 1
    assert_refusal_logged(promoter, "malformed")
    # The id is logged escaped, so a sender's bytes cannot forge or garble log lines.
    assert "'d\\xe9livery-\\xb2'" in promoter.refusals()[0]
    assert promoter.passes == ["reconcile"]


def test_refused_deliveries_are_logged_with_reason_id_and_address_never_the_body(
    promoter: InProcessPromoter,
):
    body = body_with_marker()
    bad_signature = header_lines(signed(body, delivery_id="delivery-one", secret="not-" + SECRET))
    stale = header_lines(signed(body, delivery_id="delivery-two", timestamp=1))
    length = [f"Content-Length: {len(body)}".encode()]
    assert raw_post(promoter.service.port, bad_signature + length, body)[0] == 401
    assert raw_post(promoter.service.port, stale + length, body)[0] == 401
    first, second = promoter.refusals()
    assert first.startswith("webhook refused (bad_signature): ")
    assert "delivery 'delivery-one' from 127.0.0.1" in first
    assert second.startswith("webhook refused (stale): ")
    assert "delivery 'delivery-two' from 127.0.0.1" in second
    assert all(BODY_MARKER not in line for line in promoter.log)


def test_the_server_serves_a_valid_delivery_after_every_malformed_one(
    promoter: InProcessPromoter,
):
    body = body_with_marker()
    port = promoter.service.port
    malformed = [
        [*header_lines(signed(body)), b"Content-Length: \xb2"],
        [*header_lines(signed(body)), b"Content-Length: " + b"9" * 5000],
        signed_lines(body, **{webhooks.TIMESTAMP_HEADER: "\xb2"}),
        signed_lines(body, **{webhooks.DELIVERY_HEADER: "\xe9"}),
    ]
    for lines in malformed:
        assert raw_post(port, lines, body)[0] == 400
    assert raw_post(port, signed_lines(body, **{webhooks.SIGNATURE_HEADER: "\xe9"}), body)[0] == 401
    status, answer = raw_post(port, signed_lines(body), body)
    assert (status, answer["result"]) == (202, "accepted")
    wait_for(lambda: "webhook" in promoter.passes, 10, "the pass the valid delivery woke")
    assert promoter.webhook_count("malformed") == 4
    assert promoter.webhook_count("bad_signature") == 1
    assert promoter.webhook_count("accepted") == 1
    assert len(promoter.refusals()) == 5


def test_mlopsctl_serve_answers_malformed_deliveries_and_logs_them(
    platform, mlflow_server, start_promoter
):
    """The same through the `mlopsctl serve` command, its metrics and its log on stderr."""
    mlflow_server.register(platform.model, {"accuracy": 0.9})
    started = start_promoter(platform, mlflow_server.url)
    body = body_with_marker()
    status, answer = raw_post(
        started.port, [*header_lines(signed(body)), b"Content-Length: \xb2"], body
    )
    assert (status, answer["result"]) == (400, "malformed")
    lines = signed_lines(body, **{webhooks.SIGNATURE_HEADER: "v1,\xe9"})
    status, answer = raw_post(started.port, lines, body)
    assert (status, answer["result"]) == (401, "bad_signature")
    assert started.get("/healthz")[0] == 200
    assert started.metric('mlopsctl_webhook_requests_total{result="malformed"}') == 1
    assert started.metric('mlopsctl_webhook_requests_total{result="bad_signature"}') == 1
    log_path: Path = started.log

    def both_logged() -> bool:
        text = log_path.read_text()
        return "webhook refused (malformed)" in text and "webhook refused (bad_signature)" in text

    wait_for(both_logged, 10, "both refusals in the service's log")
    text = log_path.read_text()
    assert BODY_MARKER not in text
    assert "Traceback" not in text


# --- 16: secrets never in a repr, yet used where they must be


SECRET_FIELD = re.compile(r"(token|secret|password|authorization|credentials?)$")


def every_dataclass_in_mlopsctl() -> Iterator[type]:
    for module_info in pkgutil.walk_packages(mlopsctl.__path__, "mlopsctl."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and value.__module__ == module.__name__
            ):
                yield value


def test_no_dataclass_in_mlopsctl_puts_a_secret_field_in_its_repr():
    secret_fields = [
        (cls.__qualname__, each.name, each.repr)
        for cls in every_dataclass_in_mlopsctl()
        for each in dataclasses.fields(cls)
        if SECRET_FIELD.search(each.name)
    ]
    # The fields this applies to today, so a rename cannot make the check vacuous.
    assert {(name, attribute) for name, attribute, _repr in secret_fields} >= {
        ("Settings", "webhook_secret"),
        ("PullRequests", "token"),
        ("Credentials", "token"),
        ("Settings", "credentials"),
        ("Landing", "credentials"),
        ("Remote", "credentials"),
    }
    assert [entry for entry in secret_fields if entry[2]] == []


def test_the_webhook_secret_is_not_in_any_repr_yet_checks_signatures(
    promoter: InProcessPromoter,
):
    settings = promoter.service.settings
    assert settings.webhook_secret == SECRET
    for shown in (settings, promoter.service, promoter.service.reconciler):
        assert SECRET not in repr(shown)
        assert SECRET not in str(shown)
    body = body_with_marker()
    status, answer = raw_post(promoter.service.port, signed_lines(body), body)
    assert (status, answer["result"]) == (202, "accepted")
    lines = header_lines(signed(body, secret="not-" + SECRET))
    lines.append(f"Content-Length: {len(body)}".encode())
    assert raw_post(promoter.service.port, lines, body)[0] == 401


def test_the_github_token_is_not_in_the_repr_yet_authorises_requests(github: GitHubStandIn):
    pull_requests = PullRequests(github.url, GITHUB_REPOSITORY, GITHUB_TOKEN)
    assert GITHUB_TOKEN not in repr(pull_requests)
    assert GITHUB_TOKEN not in str(pull_requests)
    # The stand-in answers 401 unless the request carries "Authorization: Bearer <token>".
    url = pull_requests.open_or_update("promote/local", "main", "a title", "a body")
    assert url.startswith(github.url) or url.startswith("https://")
    assert ("POST", f"/repos/{GITHUB_REPOSITORY}/pulls") in github.requests


def test_the_git_token_is_not_in_any_repr_yet_is_what_git_sends():
    credentials = git.Credentials(token="git-secret-value", ssh_key_file="/keys/id")
    remote = git.Remote("https://git.example.test/platform.git", credentials)
    landing = flows.Landing(credentials=credentials, validator=edit_findings)
    for shown in (credentials, remote, landing):
        assert "git-secret-value" not in repr(shown)
        assert "git-secret-value" not in str(shown)
    # MLflow's token is MLFLOW_TRACKING_TOKEN, read by MLflow's client: no field of ours holds it.
    [(key, value)] = credentials.settings()
    assert key == "http.extraHeader"
    assert (
        value
        == "Authorization: Basic " + base64.b64encode(b"x-access-token:git-secret-value").decode()
    )

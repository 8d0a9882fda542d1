"""`mlopsctl webhook register` reconciles by name and never repeats a create blindly (issue 11,
point 13).

Against a real MLflow server (sqlite and PostgreSQL backends), directly and through a loopback
proxy that forwards to it but loses the answer to the first create (held past the client's
timeout, or the connection dropped), refuses it, or never forwards it.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from mlopsctl.base.errors import RegistryError
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.service.webhooks import RELEVANT_EVENTS
from tests.support.loopback import QuietHandler, serving
from tests.support.mlflow_fixtures import MlflowServer

pytestmark = pytest.mark.parametrize("mlflow_server", ["sqlite", "postgresql"], indirect=True)

SECRET = "a-webhook-secret-of-some-length"
EVENTS = sorted(RELEVANT_EVENTS)
CREATE_PATH = "/api/2.0/mlflow/webhooks"
_names = itertools.count(1)


def fresh_name() -> str:
    return f"promoter-{next(_names)}"


def webhooks_named(server: MlflowServer, name: str) -> list:  # type: ignore[type-arg]
    found, token = [], None
    while True:
        page = server.client().list_webhooks(max_results=100, page_token=token)
        found += [webhook for webhook in page if webhook.name == name]
        token = page.token
        if not token:
            return found


@dataclass
class Proxy:
    """Forwards everything to MLflow, except what `mode` does to the creates in `lossy`."""

    upstream: str
    mode: str  # "held", "dropped", "unforwarded", "refused"
    lossy: frozenset[int] = frozenset({1})  # which creates (1-based) it spoils
    creates: int = 0  # creates that reached the proxy
    forwarded: int = 0  # creates that reached MLflow
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def proxy(request: pytest.FixtureRequest, mlflow_server: MlflowServer) -> Iterator[Proxy]:
    mode, lossy = request.param
    state = Proxy(mlflow_server.url, mode, frozenset(lossy))
    upstream = urllib.parse.urlsplit(state.upstream)

    class Handler(QuietHandler):
        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            spoilt = False
            if self.command == "POST" and self.path.rstrip("/") == CREATE_PATH:
                with state.lock:
                    state.creates += 1
                    spoilt = state.creates in state.lossy
            if spoilt and state.mode == "refused":
                answer = {"error_code": "INVALID_PARAMETER_VALUE", "message": "no, and final"}
                self.reply(400, json.dumps(answer).encode())
                return
            if spoilt and state.mode == "unforwarded":
                self.close_connection = True  # the request never reaches MLflow
                return
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
            headers = {
                name: value
                for name, value in self.headers.items()
                if name.lower() in ("content-type", "authorization", "accept")
            }
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            answer_body = response.read()
            connection.close()
            if self.command == "POST" and self.path.rstrip("/") == CREATE_PATH:
                with state.lock:
                    state.forwarded += 1
            if spoilt and state.mode == "dropped":
                self.close_connection = True  # MLflow created it; the answer is lost
                return
            if spoilt and state.mode == "held":
                state.release.wait(60)  # past the client's timeout; released at teardown
            with contextlib.suppress(OSError):  # the client gave up waiting, as intended
                self.reply(response.status, answer_body, response.getheader("Content-Type", ""))

        do_GET = do_POST = do_PATCH = do_DELETE = forward

    with serving(Handler) as url:
        state.upstream = url  # from here on: where the client talks to
        try:
            yield state
        finally:
            state.release.set()


def test_registering_twice_leaves_one_webhook_updated(
    cli, mlflow_server: MlflowServer, monkeypatch
):
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", SECRET)
    name = fresh_name()
    arguments = ("webhook", "register", "--name", name, "--mlflow-uri", mlflow_server.url)
    first = cli(*arguments, "--url", "http://127.0.0.1:1/webhooks/mlflow")
    assert first.exit_code == 0, first.stderr
    assert f"webhook {name!r} created" in first.stdout
    second = cli(*arguments, "--url", "http://127.0.0.1:2/webhooks/mlflow")
    assert second.exit_code == 0, second.stderr
    assert f"webhook {name!r} updated" in second.stdout
    [webhook] = webhooks_named(mlflow_server, name)
    assert webhook.url == "http://127.0.0.1:2/webhooks/mlflow"
    assert sorted((event.entity.value, event.action.value) for event in webhook.events) == EVENTS
    assert webhook.status.value == "ACTIVE"


def test_webhooks_sharing_the_name_are_reduced_to_the_oldest(mlflow_server: MlflowServer):
    name = fresh_name()
    client = mlflow_server.client()
    made = [
        client.create_webhook(name, f"http://127.0.0.1:{port}/old", ["model_version.created"])
        for port in (11, 12, 13)
    ]
    oldest = min(made, key=lambda webhook: (webhook.creation_timestamp, webhook.webhook_id))
    outcome = MlflowRegistry(mlflow_server.url).register_webhook(
        name, "http://127.0.0.1:1/webhooks/mlflow", EVENTS, SECRET
    )
    assert outcome.startswith("updated; deleted 2 duplicates")
    [kept] = webhooks_named(mlflow_server, name)
    assert kept.webhook_id == oldest.webhook_id
    assert kept.url == "http://127.0.0.1:1/webhooks/mlflow"


@pytest.mark.parametrize("proxy", [("held", {1}), ("dropped", {1})], indirect=True)
def test_a_create_whose_answer_is_lost_is_not_repeated(
    cli, mlflow_server: MlflowServer, proxy: Proxy, monkeypatch
):
    # The client waits 1 s for an answer: the held one comes later, the dropped one never.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", SECRET)
    name = fresh_name()
    result = cli(
        "webhook",
        "register",
        "--name",
        name,
        "--url",
        "http://127.0.0.1:1/webhooks/mlflow",
        "--mlflow-uri",
        proxy.upstream,
    )
    assert result.exit_code == 0, result.stderr
    assert (proxy.creates, proxy.forwarded) == (1, 1)  # MLflow made it; nobody asked again
    assert len(webhooks_named(mlflow_server, name)) == 1


@pytest.mark.parametrize("proxy", [("unforwarded", {1})], indirect=True)
def test_a_create_that_never_reached_mlflow_is_made_again(
    mlflow_server: MlflowServer, proxy: Proxy
):
    name = fresh_name()
    outcome = MlflowRegistry(proxy.upstream, timeout_seconds=1).register_webhook(
        name, "http://127.0.0.1:1/webhooks/mlflow", EVENTS, SECRET
    )
    assert outcome == "created"
    # The list after the lost answer showed nothing, so a second create was the right call.
    assert (proxy.creates, proxy.forwarded) == (2, 1)
    assert len(webhooks_named(mlflow_server, name)) == 1


@pytest.mark.parametrize("proxy", [("unforwarded", {1, 2, 3})], indirect=True)
def test_creates_lost_every_time_give_up_after_the_attempts(
    mlflow_server: MlflowServer, proxy: Proxy
):
    name = fresh_name()
    registry = MlflowRegistry(proxy.upstream, timeout_seconds=1, attempts=3)
    with pytest.raises(RegistryError, match="lost its answer 3 times"):
        registry.register_webhook(name, "http://127.0.0.1:1/webhooks/mlflow", EVENTS, SECRET)
    assert proxy.creates == 3
    assert webhooks_named(mlflow_server, name) == []


@pytest.mark.parametrize("proxy", [("refused", {1})], indirect=True)
def test_a_refused_create_is_reported_not_retried(mlflow_server: MlflowServer, proxy: Proxy):
    name = fresh_name()
    with pytest.raises(RegistryError, match="INVALID_PARAMETER_VALUE: no, and final"):
        MlflowRegistry(proxy.upstream).register_webhook(
            name, "http://127.0.0.1:1/webhooks/mlflow", EVENTS, SECRET
        )
    assert proxy.creates == 1

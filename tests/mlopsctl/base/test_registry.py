"""The registry client's behaviour when MLflow is away, slow, or answers nonsense.

The servers here are thin loopback stand-ins for a broken or missing registry; what a real
MLflow answers is in tests/mlopsctl/base/test_registry_errors.py.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from mlopsctl.base.errors import RegistryError
from mlopsctl.base.registry import MlflowRegistry
from tests.support.loopback import QuietHandler, serving


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's own backoff variables at zero: the retries still happen, without the waits."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")


def test_an_unreachable_registry_fails_clearly(cli, platform, no_backoff):
    # The discard port: nothing listens there.
    result = platform.command(cli, "promote", "http://127.0.0.1:9")
    assert result.exit_code == 3
    assert "MLflow at http://127.0.0.1:9 is unreachable" in result.stderr
    assert "after 4 attempts" in result.stderr  # the bounded default, not MLflow's 8


@pytest.fixture
def nonsense_server() -> Iterator[str]:
    """Answers every request with 200 and a body that is not what MLflow sends."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.reply(
                200, b"<html>not json</html>" if "alias" in self.path else b'{"model_version": 7}'
            )

    with serving(Handler) as url:
        yield url


def test_answers_that_are_not_mlflows_are_refused(nonsense_server: str):
    registry = MlflowRegistry(nonsense_server)
    with pytest.raises(RegistryError, match="reading alias m@champion failed"):
        registry.version_by_alias("m", "champion")
    with pytest.raises(RegistryError, match="reading m v1 failed"):
        registry.version("m", "1")


class Counting(QuietHandler):
    """A stand-in for a registry that is down behind its load balancer: 503, counted."""

    requests = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with Counting.lock:
            Counting.requests += 1
        self.reply(503, b"<html>service unavailable</html>", "text/html")


def test_retries_are_bounded_and_counted(no_backoff):
    Counting.requests = 0
    with serving(Counting) as url:
        registry = MlflowRegistry(url, attempts=3)
        with pytest.raises(RegistryError, match=r"kept failing \(reading m v1\) after 3 attempts"):
            registry.version("m", "1")
    assert Counting.requests == 3  # MLflow's client would make 8 by default
    assert registry.calls == 1  # one registry operation asked for


def test_a_registry_that_never_answers_times_out(no_backoff):
    answered = threading.Event()

    class Silent(QuietHandler):
        def do_GET(self) -> None:
            answered.wait(30)  # holds the request until the test is over

    with serving(Silent) as url:
        registry = MlflowRegistry(url, timeout_seconds=1, attempts=1)
        try:
            with pytest.raises(
                RegistryError, match=r"is unreachable .*after 1 attempts.*timed out"
            ):
                registry.version("m", "1")
        finally:
            answered.set()


def test_mlflows_own_variables_are_honoured_and_ours_not_taken_for_them(monkeypatch, no_backoff):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    operator = MlflowRegistry("http://127.0.0.1:9")
    assert (operator.timeout_seconds, operator.attempts) == (3, 2)
    explicit = MlflowRegistry("http://127.0.0.1:9", timeout_seconds=5.0, attempts=3)
    with pytest.raises(RegistryError, match="after 3 attempts"):
        explicit.version("m", "1")
    # MLflow reads these variables at each request, so the call above set its own values...
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5"
    # ...which a registry made afterwards must not take for the operator's.
    later = MlflowRegistry("http://127.0.0.1:9")
    assert (later.timeout_seconds, later.attempts) == (3, 2)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    unset = MlflowRegistry("http://127.0.0.1:9")
    assert (unset.timeout_seconds, unset.attempts) == (10, 4)


@pytest.mark.parametrize("uri", ["127.0.0.1:5000", "/var/mlruns", "http://", "https:///path"])
def test_a_tracking_uri_without_a_scheme_or_host_is_refused(uri: str):
    # Without a scheme MLflow would quietly make a local file store at that path.
    with pytest.raises(RegistryError, match="is not a URI MLflow's client can reach"):
        MlflowRegistry(uri)


@pytest.mark.parametrize("uri", ["databricks", "databricks://profile", "file:///tmp/mlruns"])
def test_tracking_uri_schemes_mlflow_speaks_are_accepted(uri: str):
    assert MlflowRegistry(uri).base_url == uri


def test_a_scheme_mlflow_has_no_store_for_fails_as_a_registry_error():
    with pytest.raises(RegistryError, match="localhost:5000"):
        MlflowRegistry("localhost:5000").version("m", "1")


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"MLFLOW_TRACKING_TOKEN": "t0k3n"}, "Bearer t0k3n"),
        (
            {"MLFLOW_TRACKING_USERNAME": "ci", "MLFLOW_TRACKING_PASSWORD": "pw"},
            "Basic Y2k6cHc=",  # base64 of "ci:pw"
        ),
        ({}, ""),
    ],
)
def test_mlflows_own_credential_variables_are_sent(monkeypatch, environment, expected):
    seen: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.reply(404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"}')

    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with serving(Handler) as url:
        assert MlflowRegistry(url).version("m", "1") is None
    assert seen == [expected]


# MLflow switches its usage reports off on any of these; a promoter in a cluster has none.
_CI_MARKERS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "MLFLOW_DISABLE_TELEMETRY")
_TELEMETRY_PROBE = """
import sys
from mlopsctl.base.errors import RegistryError
from mlopsctl.base import registry
try:
    registry.MlflowRegistry("http://127.0.0.1:9", attempts=1).version_by_alias("m", "champion")
except RegistryError:
    pass
from mlflow.telemetry.client import get_telemetry_client
print(get_telemetry_client())
"""


def test_a_registry_outside_ci_sends_no_usage_reports():
    """MLflow decides at import whether to report usage to its makers; a promoter in a cluster
    (no CI variables) must not."""
    import subprocess
    import sys

    environment = {name: value for name, value in os.environ.items() if name not in _CI_MARKERS}
    # Had the reports been switched on, their requests would go to a dead loopback port.
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        environment[proxy] = "http://127.0.0.1:9"
    environment["NO_PROXY"] = environment["no_proxy"] = "127.0.0.1,localhost"
    probe = subprocess.run(
        [sys.executable, "-c", _TELEMETRY_PROBE],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "None"

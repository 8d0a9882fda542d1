"""The registry client's behaviour when MLflow is away or answers nonsense."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlopsctl.registry import MlflowRegistry, RegistryError
from tests.loopback import QuietHandler, serving


def test_an_unreachable_registry_fails_clearly(cli, platform):
    # The discard port: nothing listens there.
    result = platform.command(cli, "promote", "http://127.0.0.1:9")
    assert result.exit_code == 3
    assert "MLflow at http://127.0.0.1:9 is unreachable" in result.stderr
    assert "after 4 attempts" in result.stderr


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
    with pytest.raises(RegistryError, match="invalid JSON"):
        registry.version_by_alias("m", "champion")
    with pytest.raises(RegistryError, match="without a usable model_version"):
        registry.version("m", "1")


def test_retries_are_bounded_and_counted():
    waits: list[float] = []
    registry = MlflowRegistry("http://127.0.0.1:9", attempts=3, sleep=waits.append)
    with pytest.raises(RegistryError, match="after 3 attempts"):
        registry.version("m", "1")
    assert registry.calls == 3
    assert len(waits) == 2  # no wait after the last attempt


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "127.0.0.1:5000", "databricks"])
def test_a_tracking_uri_that_is_not_http_is_refused(uri: str):
    with pytest.raises(RegistryError, match="is not an http"):
        MlflowRegistry(uri)


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
            self.reply(404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST"}')

    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with serving(Handler) as url:
        assert MlflowRegistry(url).version("m", "1") is None
    assert seen == [expected]

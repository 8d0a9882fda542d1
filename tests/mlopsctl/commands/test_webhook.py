"""`mlopsctl webhook register`'s own checks: the shared secret and the promoter's URL are
refused, naming the problem, before MLflow is called (registration itself, against a real
MLflow, is tested in tests/mlopsctl/service/test_webhooks.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.cli import CliResult

URL = "http://127.0.0.1:9/webhooks/mlflow"
# Nothing answers there: a command that called MLflow would end with exit code 3, not 2.
NOBODY = "http://127.0.0.1:9"


def register(cli: Callable[..., CliResult], *arguments: str) -> CliResult:
    return cli("webhook", "register", "--mlflow-uri", NOBODY, *arguments)


@pytest.mark.parametrize("secret", [None, "", "fifteen-chars!!"])
def test_a_missing_or_short_secret_is_refused_naming_its_variable(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, secret: str | None
):
    if secret is None:
        monkeypatch.delenv("MLOPSCTL_WEBHOOK_SECRET", raising=False)
    else:
        monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", secret)
    result = register(cli, "--url", URL)
    assert result.exit_code == 2
    assert result.stderr == (
        "mlopsctl: error: $MLOPSCTL_WEBHOOK_SECRET must hold the webhook secret "
        "(16 characters or more)\n"
    )


def test_the_secret_is_read_from_the_variable_named(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", "a-secret-long-enough")
    monkeypatch.delenv("PROMOTER_SECRET", raising=False)
    result = register(cli, "--url", URL, "--secret-env", "PROMOTER_SECRET")
    assert result.exit_code == 2
    assert "$PROMOTER_SECRET must hold the webhook secret" in result.stderr


@pytest.mark.parametrize("url", ["ftp://promoter.test/webhooks/mlflow", "promoter:8080/hooks"])
def test_a_url_that_is_not_http_is_refused(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, url: str
):
    monkeypatch.setenv("MLOPSCTL_WEBHOOK_SECRET", "a-secret-long-enough")
    result = register(cli, "--url", url)
    assert result.exit_code == 2
    assert result.stderr == f"mlopsctl: error: --url {url!r} is not an http(s) URL\n"


def test_the_url_and_the_action_are_required(cli: Callable[..., CliResult]):
    no_url = register(cli)
    assert no_url.exit_code == 2
    assert "the following arguments are required: --url" in no_url.stderr
    no_action = cli("webhook")
    assert no_action.exit_code == 2
    assert "the following arguments are required: webhook_action" in no_action.stderr

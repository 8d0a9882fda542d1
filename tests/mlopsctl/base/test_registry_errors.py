"""Only MLflow's own "not found" reads as "not there" (issue 11, point 12).

Against a real MLflow server: what is missing answers None (or no metrics), what exists reads
back. A wrong path prefix in the tracking URI, which the same server answers with its HTML 404
page, and a thin loopback stand-in for a proxy that answers its own 404 page, are errors that
name the URL and what came back; so is the CLI's promote, which must not exit 0 having done
nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mlopsctl.base.errors import RegistryError
from mlopsctl.base.registry import MlflowRegistry, ModelVersion
from tests.support.loopback import QuietHandler, serving
from tests.support.mlflow_fixtures import MlflowServer

READS: dict[str, Callable[[MlflowRegistry], Any]] = {
    "version": lambda registry: registry.version("m", "1"),
    "version_by_alias": lambda registry: registry.version_by_alias("m", "champion"),
    "run_metrics": lambda registry: registry.run_metrics("0123456789abcdef0123456789abcdef"),
    "signature": lambda registry: registry.signature("m", "1"),
    "set_alias": lambda registry: registry.set_alias("m", "champion", "1"),
}


@pytest.fixture(scope="module")
def registered(mlflow_server: MlflowServer) -> dict[str, str]:
    """Versions of model `m`: signed (alias champion), unsigned, and one with no MLmodel."""
    signed = mlflow_server.register("m", {"accuracy": 0.9}, alias="champion")
    unsigned = mlflow_server.register("m", {"accuracy": 0.8}, signature=False)
    client = mlflow_server.client()
    run = client.create_run("0")
    client.log_text(run.info.run_id, "not a model", "bare/readme.txt")
    bare = client.create_model_version(
        "m", source=f"{run.info.artifact_uri}/bare", run_id=run.info.run_id
    )
    return {"signed": signed, "unsigned": unsigned, "bare": str(bare.version)}


def test_what_exists_reads_back(mlflow_server: MlflowServer, registered: dict[str, str]):
    registry = MlflowRegistry(mlflow_server.url)
    found = registry.version_by_alias("m", "champion")
    assert isinstance(found, ModelVersion)
    assert (found.model, found.version, found.status) == ("m", registered["signed"], "READY")
    assert found.aliases == ("champion",)
    assert registry.version("m", registered["unsigned"]) is not None
    assert registry.run_metrics(found.run_id) == {"accuracy": 0.9}
    signature = registry.signature("m", registered["signed"])
    assert signature is not None and "inputs" in signature
    assert registry.signature("m", registered["unsigned"]) is None  # an MLmodel without one
    registry.set_alias("m", "challenger", registered["unsigned"])
    moved = registry.version_by_alias("m", "challenger")
    assert moved is not None and moved.version == registered["unsigned"]


def test_what_mlflow_says_is_missing_reads_as_missing(
    mlflow_server: MlflowServer, registered: dict[str, str]
):
    registry = MlflowRegistry(mlflow_server.url)
    assert registry.version("m", "999") is None
    assert registry.version("no-such-model", "1") is None
    assert registry.version_by_alias("m", "no-such-alias") is None  # INVALID_PARAMETER_VALUE
    assert registry.version_by_alias("no-such-model", "champion") is None
    assert registry.run_metrics("0123456789abcdef0123456789abcdef") == {}
    assert registry.signature("m", "999") is None
    # Registered from a directory that holds no MLmodel: the artifact store's listing says so.
    assert registry.signature("m", registered["bare"]) is None


def test_other_refusals_of_a_real_mlflow_are_errors(mlflow_server: MlflowServer, registered):
    registry = MlflowRegistry(mlflow_server.url)
    # MLflow's INVALID_PARAMETER_VALUE means "not missing" unless it is about the alias.
    with pytest.raises(RegistryError, match="INVALID_PARAMETER_VALUE"):
        registry.version("m", "not-a-number")
    with pytest.raises(RegistryError, match="INVALID_PARAMETER_VALUE"):
        registry.version_by_alias("m", "")
    with pytest.raises(RegistryError, match="RESOURCE_DOES_NOT_EXIST"):
        registry.set_alias("m", "champion", "999")


@pytest.mark.parametrize("read", sorted(READS))
def test_a_wrong_path_prefix_is_an_error_not_missing(
    mlflow_server: MlflowServer, registered: dict[str, str], read: str
):
    # The real server answers /wrong/api/... with its HTML 404 page.
    wrong = f"{mlflow_server.url}/wrong"
    with pytest.raises(RegistryError) as raised:
        READS[read](MlflowRegistry(wrong))
    message = str(raised.value)
    assert f"MLflow at {wrong}:" in message
    assert "404" in message and "Not Found" in message  # what came back
    assert "is http://" in message and "the root of an MLflow tracking server?" in message


@pytest.fixture
def proxy_404() -> Iterator[str]:
    """A thin stand-in for a reverse proxy with no route to MLflow: its own HTML 404 page."""

    class Handler(QuietHandler):
        def answer(self) -> None:
            self.reply(404, b"<html><body><h1>404 Not Found</h1>nginx</body></html>", "text/html")

        do_GET = do_POST = answer

    with serving(Handler) as url:
        yield url


@pytest.mark.parametrize("read", sorted(READS))
def test_a_proxys_html_404_is_an_error_not_missing(proxy_404: str, read: str):
    with pytest.raises(RegistryError) as raised:
        READS[read](MlflowRegistry(proxy_404))
    message = str(raised.value)
    assert f"MLflow at {proxy_404}:" in message
    assert "ENDPOINT_NOT_FOUND" in message and "nginx" in message


def test_a_json_404_that_is_not_mlflows_is_an_error():
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.reply(404, b'{"detail": "Not Found"}')

    with serving(Handler) as url, pytest.raises(RegistryError, match="Not Found"):
        MlflowRegistry(url).version("m", "1")


def test_the_safety_net_does_not_exit_0_against_a_wrong_prefix(
    cli, platform, mlflow_server: MlflowServer
):
    mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    result = platform.command(cli, "promote", f"{mlflow_server.url}/wrong")
    assert result.exit_code == 3, result.stdout + result.stderr
    assert f"{mlflow_server.url}/wrong" in result.stderr

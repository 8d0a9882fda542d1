"""`mlopsctl status` rows: one per environment, model and alias, however many files pin it.

This repository pins each environment's model twice, in the model server's overlay and in the
frontend's, so these run against its own tree and a real MLflow server.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlopsctl.base.errors import RegistryError
from mlopsctl.base.inventory import LocatedPin
from mlopsctl.base.markers import Pin
from mlopsctl.base.registry import ModelVersion, Registry
from mlopsctl.promote.gates import nothing_pinned
from mlopsctl.promote.pin_status import (
    FILES_DISAGREE,
    PinnedFile,
    StatusRow,
    _pin_state,
    short_names,
    status_rows,
)
from mlopsctl.promote.registry_reads import CONCURRENT_READS
from tests.support.loopback import QuietHandler, serving
from tests.support.mlflow_fixtures import MlflowServer
from tests.support.platform_fixtures import Platform

MODEL_SERVER = "model-server/kustomization.yaml"
STREAMLIT = "streamlit/kustomization.yaml"
WAIT_SECONDS = 20


def status(cli, platform: Platform, server: MlflowServer, *extra: str):
    return cli("status", "--repo", str(platform.checkout), "--mlflow-uri", server.url, *extra)


def pin_file(platform: Platform, path: str, version: str) -> int:
    """Pin `path`'s model at `version` in the checkout, which status reads; returns the line."""
    file = platform.checkout / path
    text = re.sub(
        rf"models:/{platform.model}/[0-9]+", f"models:/{platform.model}/{version}", file.read_text()
    )
    file.write_text(text)
    return pin_line(platform, path)


def pin_line(platform: Platform, path: str) -> int:
    lines = (platform.checkout / path).read_text().splitlines()
    return next(
        number for number, line in enumerate(lines, 1) if f"models:/{platform.model}/" in line
    )


def pin_everywhere(platform: Platform, version: str) -> None:
    for path in platform.checkout.glob("overlays/*/*/kustomization.yaml"):
        if f"models:/{platform.model}/" in path.read_text():
            pin_file(platform, path.relative_to(platform.checkout).as_posix(), version)


def test_one_row_per_environment_lists_both_files(cli, platform, mlflow_server):
    version = mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    mlflow_server.client().set_registered_model_alias(platform.model, "champion", version)
    pin_everywhere(platform, version)

    result = status(cli, platform, mlflow_server)
    assert result.exit_code == 0, result.stdout + result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "ENVIRONMENT",
        "MODEL",
        "ALIAS",
        "GIT",
        "MLFLOW",
        "STATE",
        "RUN",
        "FILES",
    ]
    assert [row.split()[0] for row in rows] == ["local", "production", "staging"]
    for row in rows:
        assert row.split()[3:6] == [version, version, "in"]
        assert row.endswith("model-server, streamlit")


def test_the_json_row_carries_every_file_and_the_fields_it_had(cli, platform, mlflow_server):
    version = mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    pin_everywhere(platform, version)

    result = status(cli, platform, mlflow_server, "--env", "local", "--format", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    document = result.json()
    assert set(document) == {"pins", "registry_calls"}
    (row,) = document["pins"]
    run_id = mlflow_server.client().get_model_version(platform.model, version).run_id
    server_line = pin_line(platform, f"overlays/local/{MODEL_SERVER}")
    frontend_line = pin_line(platform, f"overlays/local/{STREAMLIT}")
    assert row == {
        "environment": "local",
        "model": platform.model,
        "alias": "challenger",
        "pinned": version,
        "desired": version,
        "state": "in sync",
        "run_id": run_id,
        # What a row held when it was one pin: the first file's place.
        "file": f"overlays/local/{MODEL_SERVER}",
        "line": server_line,
        "files": [
            {
                "file": f"overlays/local/{MODEL_SERVER}",
                "line": server_line,
                "pinned": version,
                "state": "in sync",
            },
            {
                "file": f"overlays/local/{STREAMLIT}",
                "line": frontend_line,
                "pinned": version,
                "state": "in sync",
            },
        ],
    }
    # Two pins, one alias: one call, whose answer is also the version both files pin.
    assert document["registry_calls"] == 1


def test_files_that_disagree_are_a_state_of_their_own_and_out_of_step(cli, platform, mlflow_server):
    first = mlflow_server.register(platform.model, {"accuracy": 0.9})
    second = mlflow_server.register(platform.model, {"accuracy": 0.9}, alias="challenger")
    mlflow_server.client().set_registered_model_alias(platform.model, "champion", second)
    pin_everywhere(platform, second)
    # A hand edit that moved the model server and forgot the frontend.
    pin_file(platform, f"overlays/local/{STREAMLIT}", first)

    result = status(cli, platform, mlflow_server, "--format", "json")
    assert result.exit_code == 1
    document = result.json()
    rows = {row["environment"]: row for row in document["pins"]}
    assert len(document["pins"]) == 3
    local = rows["local"]
    assert local["state"] == f"files disagree: model-server v{second}, streamlit v{first}"
    assert local["pinned"] == f"{second},{first}"
    assert local["desired"] == second
    assert [(pinned["pinned"], pinned["state"]) for pinned in local["files"]] == [
        (second, "in sync"),
        (first, "behind"),
    ]
    assert rows["staging"]["state"] == rows["production"]["state"] == "in sync"
    # One call per alias, and one for the only pinned version no alias answered: the
    # disagreement costs no call of its own.
    assert document["registry_calls"] == 3

    table = status(cli, platform, mlflow_server, "--env", "local")
    assert table.exit_code == 1
    (row,) = table.stdout.splitlines()[1:]
    assert f"files disagree: model-server v{second}, streamlit v{first}" in row
    assert row.endswith("model-server, streamlit")
    # The other environments are in step, and say so.
    assert status(cli, platform, mlflow_server, "--env", "staging").exit_code == 0


def test_files_that_disagree_before_the_first_promotion(cli, platform, mlflow_server):
    # The frontend already names a version the model server never got: nothing is in step, even
    # though the alias the model server's v0 waits on does not exist yet.
    version = mlflow_server.register(platform.model, {"accuracy": 0.9})
    pin_file(platform, f"overlays/production/{STREAMLIT}", version)

    result = status(cli, platform, mlflow_server, "--env", "production", "--format", "json")
    assert result.exit_code == 1
    (row,) = result.json()["pins"]
    assert row["state"] == f"files disagree: model-server v0, streamlit v{version}"
    assert [pinned["state"] for pinned in row["files"]] == ["none promoted", "alias missing"]


# -- concurrent reads (issue 15): the same rows as the serial reads made, one call per key ----


def located(file: str, follows: str, value: str, line: int = 2) -> LocatedPin:
    return LocatedPin(file, Pin("model", follows, line - 1, line, value))


def version(model: str, number: str, status: str = "READY") -> ModelVersion:
    return ModelVersion(model, number, status, f"run-{model}-{number}", f"models:/{model}/{number}")


class CountingRegistry:
    """A registry of fixed answers that counts each read by key, from any thread."""

    base_url = "fake://registry"

    def __init__(
        self,
        aliases: dict[tuple[str, str], ModelVersion],
        versions: list[ModelVersion],
        failing: dict[tuple[str, str], Exception] | None = None,
        barrier: threading.Barrier | None = None,
        hold_seconds: float = 0.0,
    ) -> None:
        self.aliases = aliases
        self.versions = {(found.model, found.version): found for found in versions}
        self.failing = failing or {}
        self.barrier = barrier
        self.hold_seconds = hold_seconds
        self.reads: Counter[tuple[str, str, str]] = Counter()
        self.lock = threading.Lock()

    def version_by_alias(self, model: str, alias: str) -> ModelVersion | None:
        with self.lock:
            self.reads[("alias", model, alias)] += 1
        if self.barrier is not None:
            self.barrier.wait(WAIT_SECONDS)  # BrokenBarrierError when the reads are serial
        if (model, alias) in self.failing:
            raise self.failing[(model, alias)]
        time.sleep(self.hold_seconds)
        return self.aliases.get((model, alias))

    def version(self, model: str, number: str) -> ModelVersion | None:
        with self.lock:
            self.reads[("version", model, number)] += 1
        return self.versions.get((model, number))

    def run_metrics(self, run_id: str) -> dict[str, float]:
        raise AssertionError("status reads no metrics")

    def signature(self, model: str, number: str) -> dict[str, Any] | None:
        raise AssertionError("status reads no signature")

    def set_alias(self, model: str, alias: str, number: str) -> None:
        raise AssertionError("status moves no alias")


def serial_status_rows(pins: list[LocatedPin], registry: Registry) -> list[StatusRow]:
    """`status_rows` as it was before its reads were concurrent: the reference for the rows."""
    by_alias: dict[tuple[str, str], ModelVersion | None] = {}
    by_version: dict[tuple[str, str], ModelVersion | None] = {}
    groups: dict[tuple[str, str, str], list[PinnedFile]] = {}
    for pin in pins:
        key = (pin.model, pin.alias)
        if key not in by_alias:
            by_alias[key] = registry.version_by_alias(*key)
        target = by_alias[key]
        if target is not None:
            by_version[(target.model, target.version)] = target
        pinned = pin.pin.value
        if not nothing_pinned(pinned) and (pin.model, pinned) not in by_version:
            by_version[(pin.model, pinned)] = registry.version(pin.model, pinned)
        groups.setdefault((pin.environment or "", pin.model, pin.alias), []).append(
            PinnedFile(
                pin.file,
                pin.pin.value_line,
                pinned,
                _pin_state(pinned, target, by_version.get((pin.model, pinned))),
            )
        )
    rows = []
    for (environment, model, alias), found in groups.items():
        files = tuple(sorted(found, key=lambda pinned_file: (pinned_file.file, pinned_file.line)))
        target = by_alias[(model, alias)]
        versions = list(dict.fromkeys(pinned_file.pinned for pinned_file in files))
        state = files[0].state
        if len(versions) > 1:
            names = short_names(environment, files)
            state = f"{FILES_DISAGREE}: " + ", ".join(
                f"{name} v{pinned_file.pinned}"
                for name, pinned_file in zip(names, files, strict=True)
            )
        rows.append(
            StatusRow(
                environment,
                model,
                alias,
                ",".join(versions),
                target.version if target else None,
                state,
                target.run_id if target else "",
                files[0].file,
                files[0].line,
                files,
            )
        )
    return rows


def mixed_case() -> tuple[list[LocatedPin], CountingRegistry]:
    """Every state at once, over two environments, with two files per model in local."""
    pins = [
        located("overlays/local/model-server/kustomization.yaml", "in-sync@challenger", "3"),
        located("overlays/local/streamlit/kustomization.yaml", "in-sync@challenger", "3"),
        located("overlays/local/model-server/kustomization.yaml", "no-alias@challenger", "2", 4),
        located("overlays/local/model-server/kustomization.yaml", "no-version@challenger", "4", 6),
        located("overlays/local/model-server/kustomization.yaml", "pending@challenger", "1", 8),
        located("overlays/local/model-server/kustomization.yaml", "disagree@challenger", "2", 10),
        located("overlays/local/streamlit/kustomization.yaml", "disagree@challenger", "1", 4),
        located("overlays/local/model-server/kustomization.yaml", "new@challenger", "0", 12),
        located("overlays/local/model-server/kustomization.yaml", "due@challenger", "0", 14),
        # Local pins v2 of `behind`, which only production's alias (read later) answers: the
        # serial reads asked for v2 on its own; the concurrent ones read every alias first.
        located("overlays/local/model-server/kustomization.yaml", "behind@challenger", "2", 16),
        located("overlays/production/model-server/kustomization.yaml", "behind@champion", "2"),
        located("overlays/production/model-server/kustomization.yaml", "in-sync@champion", "2", 4),
    ]
    registry = CountingRegistry(
        aliases={
            ("in-sync", "challenger"): version("in-sync", "3"),
            ("in-sync", "champion"): version("in-sync", "2"),
            ("no-version", "challenger"): version("no-version", "5"),
            ("pending", "challenger"): version("pending", "2", "PENDING_REGISTRATION"),
            ("disagree", "challenger"): version("disagree", "2"),
            ("due", "challenger"): version("due", "1"),
            ("behind", "challenger"): version("behind", "3"),
            ("behind", "champion"): version("behind", "2"),
        },
        versions=[
            version("in-sync", "2"),
            version("in-sync", "3"),
            version("no-alias", "2"),
            version("pending", "1"),
            version("disagree", "1"),
            version("disagree", "2"),
            version("behind", "2"),
            version("behind", "3"),
        ],
    )
    return pins, registry


def test_concurrent_rows_are_the_serial_rows_on_every_state():
    pins, registry = mixed_case()
    rows = status_rows(pins, registry)
    assert rows == serial_status_rows(pins, mixed_case()[1])
    assert [(row.model, row.alias, row.state) for row in rows] == [
        ("in-sync", "challenger", "in sync"),
        ("no-alias", "challenger", "alias missing"),
        ("no-version", "challenger", "version missing"),
        ("pending", "challenger", "not READY"),
        ("disagree", "challenger", "files disagree: model-server v2, streamlit v1"),
        ("new", "challenger", "none promoted"),
        ("due", "challenger", "none promoted, behind"),
        ("behind", "challenger", "behind"),
        ("behind", "champion", "in sync"),
        ("in-sync", "champion", "in sync"),
    ]


def test_one_read_per_alias_and_per_pinned_version_no_alias_answered():
    pins, registry = mixed_case()
    status_rows(pins, registry)
    assert {key for key, count in registry.reads.items() if count != 1} == set()
    aliases = {(model, alias) for kind, model, alias in registry.reads if kind == "alias"}
    assert aliases == {(pin.model, pin.alias) for pin in pins}
    # Only pinned versions that no alias answered, and never a version 0.
    versions = {(model, number) for kind, model, number in registry.reads if kind == "version"}
    assert versions == {("no-alias", "2"), ("no-version", "4"), ("pending", "1"), ("disagree", "1")}


def test_alias_reads_are_under_way_at_once():
    models = [f"model-{index}" for index in range(CONCURRENT_READS)]
    pins = [
        located("overlays/local/model-server/kustomization.yaml", f"{model}@challenger", "1", line)
        for line, model in enumerate(models, 2)
    ]
    # Each read waits at the barrier for all the others: serial reads would break it.
    barrier = threading.Barrier(len(models))
    registry = CountingRegistry(
        {(model, "challenger"): version(model, "1") for model in models}, [], barrier=barrier
    )
    rows = status_rows(pins, registry)
    assert not barrier.broken
    assert [row.state for row in rows] == ["in sync"] * len(models)


def test_a_failed_read_raises_the_first_failure_in_pin_order():
    pins = [
        located("overlays/local/model-server/kustomization.yaml", f"model-{index}@challenger", "1")
        for index in range(40)
    ]
    first, later = RegistryError("model-3 failed"), RegistryError("model-6 failed")
    registry = CountingRegistry(
        {(f"model-{index}", "challenger"): version(f"model-{index}", "1") for index in range(40)},
        [],
        failing={("model-3", "challenger"): first, ("model-6", "challenger"): later},
        # The answers that do come take a while, as a registry's do: the failure is seen
        # while the first few are under way, long before the last key's turn.
        hold_seconds=0.5,
    )
    with pytest.raises(RegistryError) as raised:
        status_rows(pins, registry)
    assert raised.value is first
    assert registry.reads[("alias", "model-3", "challenger")] == 1
    # No read starts after a failure is seen; those under way finish.
    assert sum(registry.reads.values()) < 40


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")


@pytest.fixture
def failing_proxy(mlflow_server: MlflowServer) -> Iterator[tuple[str, set[str]]]:
    """Forwards reads to the real MLflow, except those naming a model in the set: a 503."""
    failing: set[str] = set()

    class Proxy(QuietHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            if query.get("name", [""])[0] in failing:
                self.reply(503, b"<html>service unavailable</html>", "text/html")
                return
            try:
                with urllib.request.urlopen(mlflow_server.url + self.path, timeout=10) as answer:
                    self.reply(answer.status, answer.read())
            except urllib.error.HTTPError as error:
                self.reply(error.code, error.read())

    with serving(Proxy) as url:
        yield url, failing


def test_a_registry_failure_mid_batch_exits_3_naming_the_first_pin(
    cli, tmp_path: Path, mlflow_server: MlflowServer, failing_proxy, no_backoff
):
    url, failing = failing_proxy
    models = [f"batch-{index:02d}" for index in range(12)]
    for model in models:
        mlflow_server.register(model, {"accuracy": 0.9}, alias="challenger")
    (tmp_path / "mlopsctl.yaml").write_text(
        "repository:\n  url: https://example.test/p.git\n"
        'environments: [local]\nkubernetesVersion: "1.35"\n'
    )
    overlay = tmp_path / "overlays/local/models"
    overlay.mkdir(parents=True)
    literals = "".join(
        f"      # mlopsctl: model {model}@challenger\n      - M{index}=models:/{model}/1\n"
        for index, model in enumerate(models)
    )
    (overlay / "kustomization.yaml").write_text(
        f"configMapGenerator:\n  - name: pins\n    literals:\n{literals}"
    )
    arguments = ("status", "--repo", str(tmp_path), "--mlflow-uri", url, "--format", "json")
    healthy = cli(*arguments)
    assert healthy.exit_code == 0, healthy.stderr
    assert healthy.json()["registry_calls"] == len(models)

    failing.update({"batch-05", "batch-09"})
    result = cli(*arguments)
    assert result.exit_code == 3
    assert result.stdout == ""
    assert f"MLflow at {url} kept failing (reading alias batch-05@challenger) after 4 attempts" in (
        result.stderr
    )

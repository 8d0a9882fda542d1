"""`mlopsctl status` rows: one per environment, model and alias, however many files pin it.

This repository pins each environment's model twice, in the model server's overlay and in the
frontend's, so these run against its own tree and a real MLflow server.
"""

from __future__ import annotations

import re

from tests.support.mlflow_fixtures import MlflowServer
from tests.support.platform_fixtures import Platform

MODEL_SERVER = "model-server/kustomization.yaml"
STREAMLIT = "streamlit/kustomization.yaml"


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

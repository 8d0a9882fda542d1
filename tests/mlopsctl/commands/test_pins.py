"""`mlopsctl pins`: every marked pin of the repository, where it is, what it follows and its
value, as a table or JSON; a marker that governs no value stops it with the file and line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.cli import CliResult
from tests.support.paths import REPOSITORY
from tests.support.trees import MINIMAL_CONFIG, write_tree

OVERLAY = """\
images:
  # mlopsctl: image web
  - name: registry.example.test/web
    newTag: 1.2.3
configMapGenerator:
  - name: pin
    literals:
      # mlopsctl: model iris-classifier@champion
      - MODEL_URI=models:/iris-classifier/12
"""


def test_pins_command_lists_every_pin(cli):
    result = cli("pins", "--repo", str(REPOSITORY), "--format", "json")
    assert result.exit_code == 0
    pins = result.json()
    models = {(p["file"], p["follows"], p["value"]) for p in pins if p["kind"] == "model"}
    assert models == {
        # A fork starts with nothing promoted: every pin is at version 0.
        (f"overlays/{environment}/{component}/kustomization.yaml", f"iris-classifier@{alias}", "0")
        for environment, alias in (
            ("local", "challenger"),
            ("staging", "challenger"),
            ("production", "champion"),
        )
        for component in ("model-server", "streamlit")
    }
    assert len([p for p in pins if p["kind"] == "image"]) == 12  # 4 images x 3 environments
    table = cli("pins", "--repo", str(REPOSITORY)).stdout.splitlines()
    assert table[0].split() == ["WHERE", "KIND", "FOLLOWS", "VALUE"]
    rows = [line.split() for line in table[1:]]
    assert len(rows) == len(pins)
    production = next(
        p
        for p in pins
        if p["file"] == "overlays/production/model-server/kustomization.yaml"
        and p["kind"] == "model"
    )
    assert [
        f"{production['file']}:{production['value_line']}",
        "model",
        "iris-classifier@champion",
        "0",
    ] in rows


def test_a_small_tree_lists_as_a_table_and_as_json(cli: Callable[..., CliResult], tmp_path: Path):
    repository = write_tree(
        tmp_path,
        {"mlopsctl.yaml": MINIMAL_CONFIG, "overlays/local/web/kustomization.yaml": OVERLAY},
    )
    table = cli("pins", "--repo", str(repository))
    assert table.exit_code == 0
    assert table.stdout.splitlines() == [
        "WHERE                                    KIND   FOLLOWS                   VALUE",
        "overlays/local/web/kustomization.yaml:4  image  web                       1.2.3",
        "overlays/local/web/kustomization.yaml:9  model  iris-classifier@champion  12",
    ]
    listed = cli("pins", "--repo", str(repository), "--format", "json").json()
    assert listed == [
        {
            "file": "overlays/local/web/kustomization.yaml",
            "kind": "image",
            "follows": "web",
            "marker_line": 2,
            "value_line": 4,
            "value": "1.2.3",
        },
        {
            "file": "overlays/local/web/kustomization.yaml",
            "kind": "model",
            "follows": "iris-classifier@champion",
            "marker_line": 8,
            "value_line": 9,
            "value": "12",
        },
    ]


def test_a_tree_without_pins_lists_none(cli: Callable[..., CliResult], tmp_path: Path):
    repository = write_tree(tmp_path, {"mlopsctl.yaml": MINIMAL_CONFIG})
    assert cli("pins", "--repo", str(repository)).stdout == "WHERE  KIND  FOLLOWS  VALUE\n"
    assert cli("pins", "--repo", str(repository), "--format", "json").json() == []


def test_a_marker_without_its_value_is_an_error_naming_the_file_and_line(
    cli: Callable[..., CliResult], tmp_path: Path
):
    broken = OVERLAY.replace("      - MODEL_URI=models:/iris-classifier/12\n", "")
    repository = write_tree(
        tmp_path, {"mlopsctl.yaml": MINIMAL_CONFIG, "overlays/local/web/kustomization.yaml": broken}
    )
    result = cli("pins", "--repo", str(repository))
    assert result.exit_code == 2
    assert result.stderr == (
        "mlopsctl: error: overlays/local/web/kustomization.yaml:8: marker for model "
        "'iris-classifier' is not followed by exactly one models:/iris-classifier/<version> "
        "value\n"
    )
    assert result.stdout == ""


def test_another_format_is_a_usage_error(cli: Callable[..., CliResult]):
    result = cli("pins", "--repo", str(REPOSITORY), "--format", "yaml")
    assert result.exit_code == 2
    assert "argument --format: invalid choice: 'yaml'" in result.stderr

"""The pin inventory: every marker of a tree, with its file and environment, filtered by model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.inventory import model_pins, scan
from tests.support.paths import REPOSITORY
from tests.support.trees import write_tree

MODEL_OVERLAY = """\
configMapGenerator:
  - name: model
    literals:
      # mlopsctl: model {model}@champion
      - MODEL_URI=models:/{model}/{version}
"""
IMAGE_OVERLAY = """\
images:
  # mlopsctl: image model-server
  - name: ghcr.io/example/model-server
    newTag: 0.1.0
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path,
        {
            "overlays/staging/model-server/kustomization.yaml": MODEL_OVERLAY.format(
                model="iris", version=3
            ),
            "overlays/production/model-server/kustomization.yaml": MODEL_OVERLAY.format(
                model="iris", version=2
            ),
            "overlays/production/other/kustomization.yml": MODEL_OVERLAY.format(
                model="wine", version=5
            ),
            "overlays/production/model-server/images.yaml": IMAGE_OVERLAY,
            "base/model-server/kustomization.yaml": MODEL_OVERLAY.format(model="iris", version=1),
            "overlays/staging/notes.txt": "# mlopsctl: model iris@champion\n- ignored\n",
            "overlays/staging/unmarked.yaml": "kind: ConfigMap\n",
        },
    )


def test_scan_finds_each_marker_with_its_file_and_environment(tree: Path) -> None:
    found = {(located.file, located.pin.kind, located.pin.value) for located in scan(tree)}
    assert found == {
        ("base/model-server/kustomization.yaml", "model", "1"),
        ("overlays/production/model-server/images.yaml", "image", "0.1.0"),
        ("overlays/production/model-server/kustomization.yaml", "model", "2"),
        ("overlays/production/other/kustomization.yml", "model", "5"),
        ("overlays/staging/model-server/kustomization.yaml", "model", "3"),
    }
    environments = {located.file: located.environment for located in scan(tree)}
    assert environments["base/model-server/kustomization.yaml"] is None
    assert environments["overlays/staging/model-server/kustomization.yaml"] == "staging"


def test_model_pins_keeps_environment_pins_of_models_only(tree: Path) -> None:
    pins = scan(tree)
    every = model_pins(pins)
    assert {(p.environment, p.model, p.alias) for p in every} == {
        ("staging", "iris", "champion"),
        ("production", "iris", "champion"),
        ("production", "wine", "champion"),
    }
    assert [p.pin.value for p in model_pins(pins, environment="production", model="iris")] == ["2"]
    assert model_pins(pins, environment="dev") == []


def test_scan_leaves_excluded_directories_out(tree: Path) -> None:
    files = {located.file for located in scan(tree, exclude=("overlays/production",))}
    assert files == {
        "base/model-server/kustomization.yaml",
        "overlays/staging/model-server/kustomization.yaml",
    }


def test_a_file_that_is_not_utf8_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "overlays/staging/app/kustomization.yaml"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"# mlopsctl: model iris@champion\n- \xff\n")
    with pytest.raises(MlopsctlError, match=r"overlays/staging/app/kustomization\.yaml: not UTF-8"):
        scan(tmp_path)


def test_this_repository_pins_each_environment_s_model() -> None:
    pins = model_pins(scan(REPOSITORY, exclude=("tests",)))
    environments = {located.environment for located in pins}
    assert environments and None not in environments
    assert all(located.model and located.alias for located in pins)

"""mlopsctl.sources: a rendered object's file, also when the build renamed it."""

from __future__ import annotations

from pathlib import Path

from mlopsctl.base.resources import Resource
from mlopsctl.validate.sources import SourceIndex
from tests.support.trees import write_tree


def config_map(name: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"


def located(repository: Path, root: str, kind: str, name: str) -> str:
    resource = Resource(root, {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}})
    return SourceIndex(repository).locate(resource)


def test_a_name_suffix_and_prefix_lead_back_to_the_shared_file(tmp_path: Path):
    write_tree(
        tmp_path,
        {
            "base/shared/kustomization.yaml": (
                "kind: Component\nnamePrefix: team-\nresources:\n  - one.yaml\n  - two.yaml\n"
            ),
            "base/shared/one.yaml": config_map("one"),
            "base/shared/two.yaml": config_map("two"),
            "envs/staging/kustomization.yaml": (
                "nameSuffix: -staging\nresources:\n  - own.yaml\ncomponents:\n"
                "  - ../../base/shared\n"
            ),
            "envs/staging/own.yaml": config_map("own"),
        },
    )
    root = "envs/staging"
    assert located(tmp_path, root, "ConfigMap", "team-two-staging") == "base/shared/two.yaml"
    assert located(tmp_path, root, "ConfigMap", "own-staging") == "envs/staging/own.yaml"
    # A name as written still counts (kustomize leaves some kinds' names alone).
    assert located(tmp_path, root, "ConfigMap", "one") == "base/shared/one.yaml"
    # Nothing of that name: the root's kustomization.
    assert located(tmp_path, root, "ConfigMap", "three-staging") == (
        "envs/staging/kustomization.yaml"
    )

"""`validate --upstream-crds` against CRDs served by a real HTTP server on loopback."""

from __future__ import annotations

import functools
import http.server
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlopsctl.validate.upstream import strict
from tests.support.loopback import serving
from tests.support.trees import MINIMAL_CONFIG, write_tree

WIDGET_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.test
spec:
  group: example.test
  scope: Namespaced
  names: {kind: Widget, plural: widgets}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
              type: object
              properties:
                size: {type: integer}
                port: {x-kubernetes-int-or-string: true}
                extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""
# The project's own schema for Widget is lenient on purpose: only upstream catches the typo.
LENIENT = {"type": "object", "x-kubernetes-scope": "Namespaced"}
WIDGET = """\
apiVersion: example.test/v1
kind: Widget
metadata:
  name: w
  labels:
    app.kubernetes.io/name: w
    app.kubernetes.io/component: c
    app.kubernetes.io/part-of: p
spec:
  size: 3
  sise: 4
  port: http
  extra: {anything: goes}
"""


@pytest.fixture
def crd_server(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    (served / "widget-crd.yaml").write_text(WIDGET_CRD)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    with serving(handler) as url:  # type: ignore[arg-type]
        yield url


def fixture_repository(root: Path, crd_url: str) -> Path:
    return write_tree(
        root,
        {
            "mlopsctl.yaml": MINIMAL_CONFIG + f"validate:\n  upstreamCRDs: [{crd_url}]\n",
            "widgets/kustomization.yaml": "resources: [widget.yaml]\n",
            "widgets/widget.yaml": WIDGET,
            "schemas/example.test/widget_v1.json": json.dumps(LENIENT),
        },
    )


def test_upstream_crd_schemas_catch_unknown_fields(cli, tmp_path: Path, crd_server: str):
    repository = fixture_repository(tmp_path / "repo", f"{crd_server}/widget-crd.yaml")
    schema_dir = str(repository / "schemas")
    without = cli("validate", "--repo", str(repository), "--schema-dir", schema_dir)
    assert without.exit_code == 0, without.stdout
    result = cli(
        "validate",
        "--repo",
        str(repository),
        "--schema-dir",
        schema_dir,
        "--upstream-crds",
        "--format",
        "json",
    )
    assert result.exit_code == 1
    assert "upstream schema: example.test/v1 Widget from http://127.0.0.1:" in result.stderr
    findings = result.json()["findings"]
    assert [(f["check"], f["file"], f["field"]) for f in findings] == [
        ("upstream-schema", "widgets/widget.yaml", "spec")
    ]
    assert "'sise' was unexpected" in findings[0]["message"]


def test_an_unreachable_upstream_crd_cannot_run(cli, tmp_path: Path, crd_server: str):
    repository = fixture_repository(tmp_path / "repo", f"{crd_server}/missing.yaml")
    result = cli("validate", "--repo", str(repository), "--upstream-crds")
    assert result.exit_code == 2
    assert f"could not fetch upstream CRD {crd_server}/missing.yaml" in result.stderr


def test_strict_keeps_what_the_crd_leaves_open():
    schema = strict(
        {
            "type": "object",
            "properties": {
                "open": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"a": {"type": "string"}},
                },
                "port": {"x-kubernetes-int-or-string": True},
            },
        }
    )
    assert schema["additionalProperties"] is False
    assert "additionalProperties" not in schema["properties"]["open"]
    assert schema["properties"]["port"] == {"type": ["integer", "string"]}

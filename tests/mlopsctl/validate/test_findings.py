"""mlopsctl.validate.findings: how validation's findings read for people and for machines."""

from __future__ import annotations

import json

from mlopsctl.validate.findings import Finding, format_json, format_text

REPLICAS = Finding(
    file="overlays/prod/model-server/kustomization.yaml",
    resource="Deployment/serving/model-server",
    field="spec.replicas",
    message="must be at least 2 in prod",
    check="policies",
    root="apps/prod",
)
MISSING = Finding(
    file="overlays/qa",
    resource="",
    field="",
    message="environment qa has no overlay",
    check="topology",
)


def test_text_names_file_resource_field_message_check_and_root() -> None:
    assert format_text([REPLICAS]) == (
        "overlays/prod/model-server/kustomization.yaml: Deployment/serving/model-server: "
        "spec.replicas: must be at least 2 in prod [policies, rendered from apps/prod]"
    )


def test_text_leaves_out_what_a_finding_does_not_have() -> None:
    assert format_text([MISSING]) == "overlays/qa: environment qa has no overlay [topology]"


def test_text_is_one_line_per_finding_and_empty_for_none() -> None:
    assert format_text([REPLICAS, MISSING]).splitlines()[1] == format_text([MISSING])
    assert format_text([]) == ""


def test_json_lists_every_field_and_the_extra_keys() -> None:
    document = json.loads(format_json([REPLICAS, MISSING], roots=3, ok=False))

    assert document == {
        "findings": [
            {
                "check": "policies",
                "field": "spec.replicas",
                "file": "overlays/prod/model-server/kustomization.yaml",
                "message": "must be at least 2 in prod",
                "resource": "Deployment/serving/model-server",
                "root": "apps/prod",
            },
            {
                "check": "topology",
                "field": "",
                "file": "overlays/qa",
                "message": "environment qa has no overlay",
                "resource": "",
                "root": "",
            },
        ],
        "ok": False,
        "roots": 3,
    }


def test_json_of_no_findings_is_an_empty_list() -> None:
    assert json.loads(format_json([])) == {"findings": []}


def test_findings_sort_by_file_then_resource() -> None:
    assert sorted([MISSING, REPLICAS]) == [REPLICAS, MISSING]

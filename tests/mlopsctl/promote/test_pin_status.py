"""mlopsctl.promote.pin_status: the state each pin is in against the alias it follows, and
the short names a table gives the files of one environment."""

from __future__ import annotations

from typing import Any

import pytest

from mlopsctl.base.inventory import LocatedPin
from mlopsctl.base.markers import Pin
from mlopsctl.base.registry import ModelVersion
from mlopsctl.promote import pin_status
from mlopsctl.promote.pin_status import PinnedFile, short_names, status_rows


def a_version(version: str, status: str = "READY") -> ModelVersion:
    return ModelVersion("iris", version, status, f"run-{version}", f"models:/iris/{version}")


class FakeRegistry:
    base_url = "http://registry.test"

    def __init__(self, aliases: dict[str, ModelVersion], versions: dict[str, ModelVersion]):
        self.aliases = aliases
        self.versions = versions

    def version_by_alias(self, model: str, alias: str) -> ModelVersion | None:
        return self.aliases.get(alias)

    def version(self, model: str, version: str) -> ModelVersion | None:
        return self.versions.get(version)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return {}

    def signature(self, model: str, version: str) -> dict[str, Any] | None:
        return None

    def set_alias(self, model: str, alias: str, version: str) -> None:
        raise AssertionError("status never writes")


def a_pin(file: str, value: str, line: int = 10, follows: str = "iris@production") -> LocatedPin:
    return LocatedPin(file, Pin("model", follows, line - 1, line, value))


@pytest.mark.parametrize(
    ("pinned", "alias_version", "pinned_exists", "expected"),
    [
        ("3", a_version("3"), True, pin_status.IN_SYNC),
        ("2", a_version("3"), True, pin_status.BEHIND),
        ("2", None, True, pin_status.ALIAS_MISSING),
        ("9", a_version("3"), False, pin_status.VERSION_MISSING),
        ("2", a_version("3", "PENDING_REGISTRATION"), True, pin_status.NOT_READY),
        ("0", None, False, pin_status.NONE_PROMOTED),
        ("0", a_version("3"), False, pin_status.FIRST_PROMOTION_DUE),
        ("0", a_version("3", "FAILED_REGISTRATION"), False, pin_status.NOT_READY),
    ],
)
def test_a_single_pin_has_the_state_its_alias_and_version_give_it(
    pinned: str, alias_version: ModelVersion | None, pinned_exists: bool, expected: str
) -> None:
    aliases = {"production": alias_version} if alias_version else {}
    versions = {pinned: a_version(pinned)} if pinned_exists else {}
    [row] = status_rows(
        [a_pin("overlays/prod/model-server/kustomization.yaml", pinned)],
        FakeRegistry(aliases, versions),
    )

    assert row.state == expected
    assert row.in_step == (expected in (pin_status.IN_SYNC, pin_status.NONE_PROMOTED))
    assert row.environment == "prod"
    assert row.pinned == pinned
    assert row.desired == (alias_version.version if alias_version else None)
    assert row.run_id == (alias_version.run_id if alias_version else "")


def test_files_pinning_one_model_at_two_versions_disagree() -> None:
    registry = FakeRegistry({"production": a_version("2")}, {"1": a_version("1")})
    [row] = status_rows(
        [
            a_pin("overlays/prod/streamlit/kustomization.yaml", "1", line=4),
            a_pin("overlays/prod/model-server/kustomization.yaml", "2", line=7),
        ],
        registry,
    )

    assert row.state == "files disagree: model-server v2, streamlit v1"
    assert not row.in_step
    assert row.pinned == "2,1"
    assert row.file == "overlays/prod/model-server/kustomization.yaml"
    assert row.line == 7
    assert [pinned_file.state for pinned_file in row.files] == [
        pin_status.IN_SYNC,
        pin_status.BEHIND,
    ]


def test_two_files_of_one_folder_that_disagree_are_told_apart_by_file() -> None:
    registry = FakeRegistry({"production": a_version("2")}, {"1": a_version("1")})
    [row] = status_rows(
        [
            a_pin("overlays/prod/model-server/values.yaml", "1", line=4),
            a_pin("overlays/prod/model-server/kustomization.yaml", "2", line=4),
        ],
        registry,
    )

    assert row.state == (
        "files disagree: model-server/kustomization.yaml v2, model-server/values.yaml v1"
    )


def test_one_row_per_environment_in_the_order_pins_are_found() -> None:
    registry = FakeRegistry({"production": a_version("2")}, {"1": a_version("1")})
    rows = status_rows(
        [
            a_pin("overlays/staging/model-server/kustomization.yaml", "2"),
            a_pin("overlays/prod/model-server/kustomization.yaml", "1"),
            a_pin("overlays/staging/streamlit/kustomization.yaml", "2"),
        ],
        registry,
    )

    assert [(row.environment, row.state, len(row.files)) for row in rows] == [
        ("staging", pin_status.IN_SYNC, 2),
        ("prod", pin_status.BEHIND, 1),
    ]


def test_status_rows_raises_a_failed_registry_read() -> None:
    class Refusing(FakeRegistry):
        def version_by_alias(self, model: str, alias: str) -> ModelVersion | None:
            raise ConnectionError("registry down")

    with pytest.raises(ConnectionError, match="registry down"):
        status_rows([a_pin("overlays/prod/a.yaml", "1")], Refusing({}, {}))


def a_file(file: str, line: int = 1) -> PinnedFile:
    return PinnedFile(file=file, line=line, pinned="1", state=pin_status.IN_SYNC)


def test_short_names_are_directories_under_the_overlay() -> None:
    files = (
        a_file("overlays/prod/model-server/kustomization.yaml"),
        a_file("overlays/prod/apps/streamlit/deployment.yaml"),
    )
    assert short_names("prod", files) == ["model-server", "apps/streamlit"]


def test_short_names_are_file_names_in_the_overlay_root_or_elsewhere() -> None:
    files = (
        a_file("overlays/prod/kustomization.yaml"),
        a_file("base/model-server/deployment.yaml"),
    )
    assert short_names("prod", files) == ["kustomization.yaml", "deployment.yaml"]


def test_short_names_add_the_line_where_two_pins_share_a_file() -> None:
    files = (
        a_file("overlays/prod/model-server/kustomization.yaml", 4),
        a_file("overlays/prod/model-server/kustomization.yaml", 12),
        a_file("overlays/prod/streamlit/kustomization.yaml", 4),
    )
    assert short_names("prod", files) == ["model-server:4", "model-server:12", "streamlit"]


def test_short_names_are_the_files_where_two_files_share_a_folder() -> None:
    files = (
        a_file("overlays/prod/model-server/kustomization.yaml", 4),
        a_file("overlays/prod/model-server/values.yaml", 4),
        a_file("overlays/prod/streamlit/kustomization.yaml", 4),
    )
    assert short_names("prod", files) == [
        "model-server/kustomization.yaml",
        "model-server/values.yaml",
        "streamlit",
    ]


def test_short_names_add_the_line_only_to_the_file_that_holds_two_pins() -> None:
    files = (
        a_file("overlays/prod/model-server/kustomization.yaml", 4),
        a_file("overlays/prod/model-server/kustomization.yaml", 12),
        a_file("overlays/prod/model-server/values.yaml", 4),
        a_file("base/model-server/kustomization.yaml", 7),
        a_file("overlays/prod/kustomization.yaml", 3),
    )
    assert short_names("prod", files) == [
        "model-server/kustomization.yaml:4",
        "model-server/kustomization.yaml:12",
        "model-server/values.yaml",
        "base/model-server/kustomization.yaml",
        "kustomization.yaml",
    ]

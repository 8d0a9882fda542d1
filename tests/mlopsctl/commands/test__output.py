"""What commands print and write: aligned tables, a promotion's report (failures on stderr, the
rest on stdout, the exit code of the worst) and files replaced whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlopsctl.base.registry import ModelVersion
from mlopsctl.commands._output import print_report, print_table, write_atomically
from mlopsctl.promote.edits import ModelChange
from mlopsctl.promote.landing import Outcome, OutcomeKind, Report
from mlopsctl.promote.plan import Failure, Refusal


def moved(environment: str, old: str, new: str) -> ModelChange:
    version = ModelVersion("iris", new, "READY", f"run-{new}", f"models:/iris/{new}")
    file = f"overlays/{environment}/model-server/kustomization.yaml"
    return ModelChange(environment, file, "iris", "champion", old, version, {}, {})


def test_a_table_is_aligned_on_its_widest_cells_without_trailing_spaces(
    capsys: pytest.CaptureFixture[str],
):
    print_table(("NAME", "VALUE"), [("a-long-name", "1"), ("b", "")])
    assert capsys.readouterr().out == "NAME         VALUE\na-long-name  1\nb\n"


def test_a_report_says_every_outcome_where_a_reader_looks_for_it(
    capsys: pytest.CaptureFixture[str],
):
    report = Report(
        outcomes=[
            Outcome(
                "local",
                OutcomeKind.COMMITTED,
                [moved("local", "1", "2")],
                "committed 0123456789ab to main",
            ),
            Outcome(
                "staging",
                OutcomeKind.PROPOSED,
                [moved("staging", "1", "2")],
                "pushed 0123456789ab to branch mlopsctl/promote/staging/iris",
                branch="mlopsctl/promote/staging/iris",
            ),
            Outcome(
                "production",
                OutcomeKind.PROPOSED,
                [moved("production", "1", "2")],
                "pushed 0123456789ab to branch mlopsctl/promote/production/iris",
                branch="mlopsctl/promote/production/iris",
                pull_request="https://github.com/example-org/mlops-platform/pull/7",
            ),
            Outcome("dev", OutcomeKind.FAILED, [], "dev: iris: failed: the remote hung up"),
        ],
        refusals=[Refusal("qa", "iris", "champion", "3", "accuracy 0.5 is under 0.9")],
        failures=[Failure("dev", "iris", "the remote hung up", 4)],
        notes=["local: iris@challenger: the alias does not exist in MLflow"],
    )
    assert print_report(report, dry_run=False, base="main") == 4
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "local: iris@challenger: the alias does not exist in MLflow",
        "qa: iris@champion -> v3 refused: accuracy 0.5 is under 0.9",
        "local: iris v1 -> v2",
        "local: committed 0123456789ab to main",
        "staging: iris v1 -> v2",
        "staging: pushed 0123456789ab to branch mlopsctl/promote/staging/iris",
        # Without GitHub the branch is all there is: the reader is told what to do with it.
        "staging: open a pull request from mlopsctl/promote/staging/iris into main",
        "production: iris v1 -> v2",
        "production: pushed 0123456789ab to branch mlopsctl/promote/production/iris",
        "production: pull request https://github.com/example-org/mlops-platform/pull/7",
    ]
    # A failure is said once, on stderr, not again as an outcome.
    assert captured.err == "dev: iris: failed: the remote hung up\n"


def test_a_dry_run_prints_the_diff_and_no_pull_request_hint(capsys: pytest.CaptureFixture[str]):
    diff = "--- a/f\n+++ b/f\n-x: 1\n+x: 2\n"
    report = Report(
        outcomes=[
            Outcome(
                "staging",
                OutcomeKind.DRY_RUN,
                [moved("staging", "1", "2")],
                "dry run: nothing changed",
                diff=diff,
                branch="mlopsctl/promote/staging/iris",
            )
        ]
    )
    assert print_report(report, dry_run=True, base="main") == 0
    out = capsys.readouterr().out
    assert out == "staging: iris v1 -> v2\nstaging: dry run: nothing changed\n" + diff


def test_an_empty_report_says_there_is_nothing_to_do(capsys: pytest.CaptureFixture[str]):
    assert print_report(Report(), dry_run=False, base="main") == 0
    assert capsys.readouterr().out == "nothing to do: every pin already has the value asked for\n"


def test_a_refusal_alone_exits_1(capsys: pytest.CaptureFixture[str]):
    report = Report(refusals=[Refusal("local", "iris", "champion", "3", "not READY")])
    assert print_report(report, dry_run=False, base="main") == 1
    assert "nothing to do" not in capsys.readouterr().out


def test_a_file_is_written_whole_with_its_directories_and_no_leftovers(tmp_path: Path):
    target = tmp_path / "out" / "overlays" / "local.yaml"
    write_atomically(target, "first\n")
    write_atomically(target, "second\n")
    assert target.read_text() == "second\n"
    assert [path.name for path in target.parent.iterdir()] == ["local.yaml"]

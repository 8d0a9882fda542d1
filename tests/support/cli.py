"""The CLI through `main()`, as the `cli` fixture: exit code, stdout and stderr of one run."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from mlopsctl.cli import main


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        exit_code = main(list(argv))
        captured = capsys.readouterr()
        return CliResult(exit_code, captured.out, captured.err)

    return run

"""`mlopsctl pins`: every marked pin in the repository, where it is and what it follows."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

from mlopsctl.commands.common import add_repository_argument, workspace
from mlopsctl.errors import MlopsctlError
from mlopsctl.kustomize import ALWAYS_EXCLUDED
from mlopsctl.pins import Pin, find_pins


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("pins", help="list the model and image pins and their markers")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    add_repository_argument(parser)


def scan(repository: Path, exclude: tuple[str, ...]) -> list[tuple[str, Pin]]:
    found: list[tuple[str, Pin]] = []
    excluded = set(ALWAYS_EXCLUDED) | set(exclude)
    for directory, subdirectories, files in os.walk(repository):
        subdirectories[:] = sorted(
            name for name in subdirectories if name not in excluded and not name.startswith(".")
        )
        for name in sorted(files):
            if not name.endswith((".yaml", ".yml")) and name != "Kustomization":
                continue
            path = Path(directory) / name
            relative = path.relative_to(repository).as_posix()
            text = path.read_text(encoding="utf-8")
            if "mlopsctl:" in text:
                found.extend((relative, pin) for pin in find_pins(text, relative))
    return found


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    try:
        pins = scan(space.repository, space.config.render_exclude)
    except UnicodeDecodeError as error:
        raise MlopsctlError(f"a YAML file is not UTF-8: {error}") from error
    if args.format == "json":
        print(json.dumps([{"file": file, **asdict(pin)} for file, pin in pins], indent=2))
        return 0
    rows = [("WHERE", "KIND", "FOLLOWS", "VALUE")] + [
        (f"{file}:{pin.value_line}", pin.kind, pin.follows, pin.value) for file, pin in pins
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0

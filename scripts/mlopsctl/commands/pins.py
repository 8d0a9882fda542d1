"""`mlopsctl pins`: every marked pin in the repository, where it is and what it follows."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from mlopsctl.base import inventory
from mlopsctl.commands._output import print_table
from mlopsctl.commands._workspace import add_repository_argument, workspace


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("pins", help="list the model and image pins and their markers")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    pins = inventory.scan(space.repository, space.config.render_exclude)
    if args.format == "json":
        print(json.dumps([{"file": p.file, **asdict(p.pin)} for p in pins], indent=2))
        return 0
    print_table(
        ("WHERE", "KIND", "FOLLOWS", "VALUE"),
        [(f"{p.file}:{p.pin.value_line}", p.pin.kind, p.pin.follows, p.pin.value) for p in pins],
    )
    return 0

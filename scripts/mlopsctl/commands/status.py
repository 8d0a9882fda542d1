"""`mlopsctl status`: each environment's model pins in Git against the version behind their
alias in MLflow, one row per environment, model and alias with the files that pin it.

Exits 1 when any row is out of step (files that disagree included), so CI and cron can act on it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from mlopsctl import inventory
from mlopsctl.commands.common import (
    add_registry_arguments,
    add_repository_argument,
    check_environment,
    print_table,
    registry,
    workspace,
)
from mlopsctl.status import short_names, status_rows


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("status", help="compare the model pins with MLflow's aliases")
    parser.add_argument("--env", help="only this environment")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    add_registry_arguments(parser)
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    check_environment(space, args.env)
    client = registry(args)
    pins = inventory.model_pins(
        inventory.scan(space.repository, space.config.render_exclude), args.env
    )
    rows = status_rows(pins, client)
    if args.format == "json":
        print(
            json.dumps(
                {"pins": [asdict(row) for row in rows], "registry_calls": client.calls}, indent=2
            )
        )
    else:
        print_table(
            # FILES last: it is the widest and varies most, so the other columns stay aligned.
            ("ENVIRONMENT", "MODEL", "ALIAS", "GIT", "MLFLOW", "STATE", "RUN", "FILES"),
            [
                (
                    row.environment,
                    row.model,
                    row.alias,
                    row.pinned,
                    row.desired or "-",
                    row.state,
                    row.run_id or "-",
                    ", ".join(short_names(row.environment, row.files)),
                )
                for row in rows
            ],
        )
    return 0 if all(row.in_step for row in rows) else 1

"""`mlopsctl promote`: pin what the followed aliases point at, through gates and validation.

Works in a throwaway clone of the remote, never in the user's checkout. Exit codes: 0 done (or
nothing to do), 1 something was refused or did not validate, 2 usage, 3 registry unreachable,
4 the git remote gave up.
"""

from __future__ import annotations

import argparse

from mlopsctl.base import toolchain
from mlopsctl.base.config import WRITERS
from mlopsctl.commands._arguments import (
    add_landing_arguments,
    add_registry_arguments,
    landing,
    registry,
    remote_of,
)
from mlopsctl.commands._output import print_report
from mlopsctl.commands._workspace import add_repository_argument, check_environment, workspace
from mlopsctl.promote import flows


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("promote", help="bring the model pins in step with MLflow")
    parser.add_argument("--env", help="only this environment")
    parser.add_argument("--model", help="only this registered model")
    parser.add_argument(
        "--writer",
        choices=WRITERS,
        help="only the environments mlopsctl.yaml gives this writer (the scheduled workflow "
        "passes cli, so it never writes a pin a promoter owns)",
    )
    add_landing_arguments(parser)
    add_registry_arguments(parser)
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    check_environment(space, args.env)
    owned = None
    if args.writer is not None:
        owned = [
            policy.environment
            for policy in space.config.promotion.environments
            if policy.writer == args.writer and args.env in (None, policy.environment)
        ]
        if not owned:
            which = f"{args.env} is not" if args.env else "no environment is"
            print(f"nothing to do: {which} written by {args.writer} (writer: in mlopsctl.yaml)")
            return 0
    remote = remote_of(args, space)
    report = flows.run(
        space.config,
        registry(args),
        toolchain.resolve(space.tools_dir),
        remote,
        landing(args, remote),
        environment=args.env,
        model=args.model,
        environments=owned,
    )
    return print_report(report, args.dry_run, space.config.promotion.branch)

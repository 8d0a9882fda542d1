"""`mlopsctl promote`: pin what the followed aliases point at, through gates and validation.

Works in a throwaway clone of the remote, never in the user's checkout. Exit codes: 0 done (or
nothing to do), 1 something was refused or did not validate, 2 usage, 3 registry unreachable,
4 the git remote gave up.
"""

from __future__ import annotations

import argparse
import sys

from mlopsctl.base import toolchain
from mlopsctl.base.config import WRITERS
from mlopsctl.commands.common import (
    add_landing_arguments,
    add_registry_arguments,
    add_repository_argument,
    check_environment,
    landing,
    registry,
    remote_of,
    workspace,
)
from mlopsctl.promote import flows
from mlopsctl.promote.landing import OutcomeKind, Report


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


def print_report(report: Report, dry_run: bool, base: str) -> int:
    for note in report.notes:
        print(note)
    for refusal in report.refusals:
        print(refusal)
    for failure in report.failures:
        print(failure, file=sys.stderr)
    for outcome in report.outcomes:
        if outcome.kind is OutcomeKind.FAILED:
            continue  # said with the failures
        for change in outcome.changes:
            print(f"{outcome.environment}: {change.summary()}")
        print(f"{outcome.environment}: {outcome.result}")
        if dry_run and outcome.diff:
            print(outcome.diff, end="")
        if outcome.pull_request:
            print(f"{outcome.environment}: pull request {outcome.pull_request}")
        elif outcome.branch and not dry_run:
            print(f"{outcome.environment}: open a pull request from {outcome.branch} into {base}")
    if not report.outcomes and not report.refusals and not report.failures:
        print("nothing to do: every pin already has the value asked for")
    return report.exit_code

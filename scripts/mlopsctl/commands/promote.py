"""`mlopsctl promote`: pin what the followed aliases point at, through gates and validation.

Works in a throwaway clone of the remote, never in the user's checkout. Exit codes: 0 done (or
nothing to do), 1 something was refused or did not validate, 2 usage, 3 registry unreachable,
4 the git remote gave up.
"""

from __future__ import annotations

import argparse
import sys

from mlopsctl import promotion, toolchain
from mlopsctl.commands.common import (
    add_registry_arguments,
    add_repository_argument,
    pull_requests_from_environment,
    registry,
    remote_of,
    workspace,
)
from mlopsctl.errors import MlopsctlError


def positive_integer(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("promote", help="bring the model pins in step with MLflow")
    parser.add_argument("--env", help="only this environment")
    parser.add_argument("--model", help="only this registered model")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the diff only")
    parser.add_argument(
        "--remote", help="the git remote to clone and push (default: from mlopsctl.yaml)"
    )
    parser.add_argument(
        "--max-attempts",
        type=positive_integer,
        default=20,
        help="pushes to try when the branch keeps moving (default: 20)",
    )
    add_registry_arguments(parser)
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    if args.env and args.env not in space.config.environments:
        raise MlopsctlError(f"--env {args.env!r} is not one of {list(space.config.environments)}")
    remote = remote_of(args, space)
    report = promotion.run(
        space.config,
        registry(args),
        toolchain.resolve(space.tools_dir),
        remote,
        environment=args.env,
        model=args.model,
        dry_run=args.dry_run,
        max_attempts=args.max_attempts,
        log=lambda line: print(line, file=sys.stderr),
        pull_requests=pull_requests_from_environment(remote),
    )
    return print_report(report, args.dry_run, space.config.promotion.branch)


def print_report(report: promotion.Report, dry_run: bool, base: str) -> int:
    for note in report.notes:
        print(note)
    for refusal in report.refused:
        print(refusal)
    for outcome in report.outcomes:
        for change in outcome.changes:
            print(f"{outcome.environment}: {change.summary()}")
        print(f"{outcome.environment}: {outcome.result}")
        if dry_run and outcome.diff:
            print(outcome.diff, end="")
        if outcome.pull_request:
            print(f"{outcome.environment}: pull request {outcome.pull_request}")
        elif outcome.branch and not dry_run:
            print(f"{outcome.environment}: open a pull request from {outcome.branch} into {base}")
    if not report.outcomes and not report.refused:
        print("nothing to do: every pin already has the value asked for")
    return 0 if report.ok else 1

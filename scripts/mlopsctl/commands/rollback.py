"""`mlopsctl rollback --env E --model M [--to VERSION]`: go back by moving the alias.

The alias in MLflow is the intent and the pin in Git the record. Rolling back only in Git would
be undone by the next reconcile, which follows the alias; so this moves the alias back first
(by default to the version pinned before, from git history), then promotes as usual.
"""

from __future__ import annotations

import argparse

from mlopsctl.base import toolchain
from mlopsctl.commands._arguments import (
    add_landing_arguments,
    add_registry_arguments,
    landing,
    registry,
    remote_of,
)
from mlopsctl.commands._output import print_report
from mlopsctl.commands._workspace import add_repository_argument, check_environment, workspace
from mlopsctl.promote.flows import rollback_run


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("rollback", help="move an alias back and pin what it points at")
    parser.add_argument("--env", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--to", metavar="VERSION", help="default: the version pinned before")
    parser.add_argument(
        "--all-following",
        action="store_true",
        help="also roll back every other environment whose pin follows the same alias of the "
        "same registry (without it, such a rollback is refused before anything moves)",
    )
    add_landing_arguments(parser, dry_run=False)
    add_registry_arguments(parser)
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    check_environment(space, args.env)
    remote = remote_of(args, space)
    result = rollback_run(
        space.config,
        registry(args),
        toolchain.resolve(space.tools_dir),
        remote,
        landing(args, remote),
        args.env,
        args.model,
        args.to,
        all_following=args.all_following,
    )
    print(
        f"moved {result.model}@{result.alias} to v{result.target} in MLflow (the intent; Git "
        f"pinned v{result.pinned}). Git records what runs, and follows the alias: the next "
        f"reconcile keeps v{result.target} instead of undoing the rollback."
    )
    if len(result.environments) > 1:
        print(
            f"environments following {result.model}@{result.alias}, rolled back together: "
            + ", ".join(result.environments)
        )
    return print_report(result.report, False, space.config.promotion.branch)

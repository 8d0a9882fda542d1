"""`mlopsctl set-image NAME (TAG | @sha256:DIGEST)`: move an image pin in the overlays that use it.

Goes through the same validate, commit and push path as promotions; environments that take pull
requests get a branch `mlopsctl/set-image/<env>/<name>`.
"""

from __future__ import annotations

import argparse
import sys

from mlopsctl import toolchain
from mlopsctl.commands.common import (
    add_repository_argument,
    pull_requests_from_environment,
    remote_of,
    workspace,
)
from mlopsctl.commands.promote import positive_integer, print_report
from mlopsctl.errors import MlopsctlError
from mlopsctl.pins import DIGEST, IMAGE_NAME, TAG, check_field
from mlopsctl.promotion import set_image_run


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("set-image", help="pin an image to a new tag or digest")
    parser.add_argument("name", metavar="NAME", help="the image, as its marker names it")
    parser.add_argument("version", metavar="TAG|@sha256:DIGEST")
    parser.add_argument("--env", help="only this environment (default: every one using NAME)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the diff only")
    parser.add_argument("--remote", help="the git remote (default: from mlopsctl.yaml)")
    parser.add_argument("--max-attempts", type=positive_integer, default=20)
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    remote = remote_of(args, space)
    check_field("NAME", args.name, IMAGE_NAME)
    tag: str | None = None
    digest: str | None = None
    if args.version.startswith("@"):
        digest = check_field("DIGEST", args.version[1:], DIGEST)
    else:
        tag = check_field("TAG", args.version, TAG)
    if args.env and args.env not in space.config.environments:
        raise MlopsctlError(f"--env {args.env!r} is not one of {list(space.config.environments)}")
    report = set_image_run(
        space.config,
        toolchain.resolve(space.tools_dir),
        remote,
        args.name,
        tag,
        digest,
        environment=args.env,
        dry_run=args.dry_run,
        max_attempts=args.max_attempts,
        log=lambda line: print(line, file=sys.stderr),
        pull_requests=pull_requests_from_environment(remote),
    )
    return print_report(report, args.dry_run, space.config.promotion.branch)

"""`mlopsctl set-image NAME (TAG | @sha256:DIGEST)`: move an image pin in the overlays that use it.

Goes through the same validate, commit and push path as promotions; environments that take pull
requests get a branch `mlopsctl/set-image/<env>/<name>`.
"""

from __future__ import annotations

import argparse

from mlopsctl.base import toolchain
from mlopsctl.base.markers import DIGEST, IMAGE_NAME, TAG, check_field
from mlopsctl.commands._arguments import add_landing_arguments, landing, remote_of
from mlopsctl.commands._output import print_report
from mlopsctl.commands._workspace import add_repository_argument, check_environment, workspace
from mlopsctl.promote.flows import set_image_run


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("set-image", help="pin an image to a new tag or digest")
    parser.add_argument("name", metavar="NAME", help="the image, as its marker names it")
    parser.add_argument("version", metavar="TAG|@sha256:DIGEST")
    parser.add_argument("--env", help="only this environment (default: every one using NAME)")
    add_landing_arguments(parser)
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    check_field("NAME", args.name, IMAGE_NAME)
    tag: str | None = None
    digest: str | None = None
    if args.version.startswith("@"):
        digest = check_field("DIGEST", args.version[1:], DIGEST)
    else:
        tag = check_field("TAG", args.version, TAG)
    check_environment(space, args.env)
    remote = remote_of(args, space)
    report = set_image_run(
        space.config,
        toolchain.resolve(space.tools_dir),
        remote,
        landing(args, remote),
        args.name,
        tag,
        digest,
        environment=args.env,
    )
    return print_report(report, args.dry_run, space.config.promotion.branch)

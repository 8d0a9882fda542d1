"""`mlopsctl render [ROOT...]`: build kustomize roots in parallel, byte-stable."""

from __future__ import annotations

import argparse
import sys

from mlopsctl.base import kustomize, toolchain
from mlopsctl.commands._arguments import directory_to_write
from mlopsctl.commands._output import write_atomically
from mlopsctl.commands._workspace import add_repository_argument, select_roots, workspace


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("render", help="render kustomize roots")
    parser.add_argument("roots", nargs="*", metavar="ROOT", help="roots to render (default: all)")
    parser.add_argument(
        "--out", type=directory_to_write, help="write one file per root under this directory"
    )
    parser.add_argument(
        "--network",
        action="store_true",
        help="also render roots that fetch remote bases or Helm charts",
    )
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    tools = toolchain.resolve(space.tools_dir)
    roots = select_roots(
        args.roots,
        kustomize.discover_roots(space.repository, space.config.render_exclude),
        space.repository,
    )
    results = kustomize.render_roots(space.repository, roots, tools, allow_network=args.network)
    failed = False
    for result in results:
        if result.skipped:
            print(
                f"{result.root}: not rendered, needs the network ({'; '.join(result.network)}); "
                "pass --network to render it",
                file=sys.stderr,
            )
            continue
        if result.error is not None:
            failed = True
            print(f"{result.root}: does not render: {result.error}", file=sys.stderr)
            continue
        for warning in result.warnings:
            print(f"{result.root}: kustomize warning: {warning}", file=sys.stderr)
        if args.out is not None:
            write_atomically(args.out / f"{result.root}.yaml", result.output)
        else:
            sys.stdout.write(f"# mlopsctl render: {result.root}\n---\n{result.output}")
    if args.out is not None:
        rendered = sum(1 for result in results if result.rendered)
        print(f"rendered {rendered} of {len(results)} roots into {args.out}", file=sys.stderr)
    return 1 if failed else 0

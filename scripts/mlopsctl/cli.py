"""The `mlopsctl` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mlopsctl import __version__
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.commands import (
    bootstrap,
    diff,
    pins,
    promote,
    render,
    rollback,
    serve,
    set_image,
    status,
    tools,
    up,
    validate,
    webhook,
)

COMMANDS = {
    "tools": tools,
    "render": render,
    "validate": validate,
    "diff": diff,
    "pins": pins,
    "status": status,
    "promote": promote,
    "set-image": set_image,
    "rollback": rollback,
    "serve": serve,
    "webhook": webhook,
    "up": up,
    "bootstrap": bootstrap,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlopsctl",
        description="Keep the GitOps ML platform repository in step with the MLflow registry.",
    )
    parser.add_argument("--version", action="version", version=f"mlopsctl {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # argparse exits 2 on bad usage, 0 on --help
        return int(exit_request.code or 0)
    try:
        exit_code: int = COMMANDS[args.command].run(args)
        return exit_code
    except MlopsctlError as error:
        print(f"mlopsctl: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("mlopsctl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The `mlopsctl` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from mlopsctl import __version__
from mlopsctl.base.errors import MlopsctlError

# Each command's module, imported only when the command runs (or for the full `--help`): the
# modules pull in what their command needs (the local run's cluster code, the promoter's HTTP
# server, jsonschema), and a command should not pay at start-up for the others'.
COMMANDS = {
    "tools": "mlopsctl.commands.tools",
    "render": "mlopsctl.commands.render",
    "validate": "mlopsctl.commands.validate",
    "diff": "mlopsctl.commands.diff",
    "pins": "mlopsctl.commands.pins",
    "status": "mlopsctl.commands.status",
    "promote": "mlopsctl.commands.promote",
    "set-image": "mlopsctl.commands.set_image",
    "rollback": "mlopsctl.commands.rollback",
    "serve": "mlopsctl.commands.serve",
    "webhook": "mlopsctl.commands.webhook",
    "up": "mlopsctl.commands.up",
    "bootstrap": "mlopsctl.commands.bootstrap",
}


def command_module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The command named on the command line, when nothing before it asks for the full help.

    The top-level parser has only flags (--help, --version), so the first word that is not one
    is the command."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
        if word in ("-h", "--help"):
            return None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: every command's own arguments, or, when `argv` names a command,
    that command's only (the others are listed by name, which is all parsing `argv` needs)."""
    parser = argparse.ArgumentParser(
        prog="mlopsctl",
        description="Keep the GitOps ML platform repository in step with the MLflow registry.",
    )
    parser.add_argument("--version", action="version", version=f"mlopsctl {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    chosen = None if argv is None else _chosen_command(argv)
    for name in COMMANDS:
        if chosen is None or name == chosen:
            command_module(name).add_parser(subparsers)
        else:
            subparsers.add_parser(name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(arguments)
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exit_request:  # argparse exits 2 on bad usage, 0 on --help
        return int(exit_request.code or 0)
    try:
        exit_code: int = command_module(args.command).run(args)
        return exit_code
    except MlopsctlError as error:
        print(f"mlopsctl: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("mlopsctl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

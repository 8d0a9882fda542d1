"""`mlopsctl webhook register`: point MLflow's registry webhook at the promoter, idempotently."""

from __future__ import annotations

import argparse
import os

from mlopsctl.base.errors import MlopsctlError
from mlopsctl.commands._arguments import add_registry_arguments, registry
from mlopsctl.service.webhooks import RELEVANT_EVENTS


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("webhook", help="manage MLflow's webhook to the promoter")
    actions = parser.add_subparsers(dest="webhook_action", required=True)
    register = actions.add_parser("register", help="create or update the webhook")
    register.add_argument("--url", required=True, help="the promoter's /webhooks/mlflow URL")
    register.add_argument("--name", default="mlopsctl-promoter")
    register.add_argument(
        "--secret-env",
        default="MLOPSCTL_WEBHOOK_SECRET",
        help="environment variable holding the shared secret",
    )
    add_registry_arguments(register)


def run(args: argparse.Namespace) -> int:
    secret = os.environ.get(args.secret_env, "")
    if len(secret) < 16:
        raise MlopsctlError(
            f"${args.secret_env} must hold the webhook secret (16 characters or more)"
        )
    if not args.url.startswith(("http://", "https://")):
        raise MlopsctlError(f"--url {args.url!r} is not an http(s) URL")
    what = registry(args).register_webhook(args.name, args.url, sorted(RELEVANT_EVENTS), secret)
    print(f"webhook {args.name!r} {what}: {args.url}")
    return 0

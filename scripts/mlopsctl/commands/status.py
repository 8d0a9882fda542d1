"""`mlopsctl status`: each environment's model pins in Git against the version behind their
alias in MLflow, one row per environment, model and alias with the files that pin it. With
`--live`, on to the cluster: Argo CD's Application and the pods that serve the model.

Exits 1 when any row is out of step (files that disagree included), so CI and cron can act on it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlopsctl.base import git, inventory
from mlopsctl.base.errors import KubeApiError, MlopsctlError
from mlopsctl.base.kubeapi import KubeApi, kubeconfig_path
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.commands._arguments import add_registry_arguments, registry
from mlopsctl.commands._output import print_table
from mlopsctl.commands._workspace import add_repository_argument, check_environment, workspace
from mlopsctl.promote.live import live_rows, record_deployments
from mlopsctl.promote.live_cluster import EnvironmentReader
from mlopsctl.promote.pin_status import StatusRow, short_names, status_rows


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("status", help="compare the model pins with MLflow's aliases")
    parser.add_argument("--env", help="only this environment")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument(
        "--live",
        action="store_true",
        help="follow each pin on to the cluster: Argo CD's sync and health, the pods' version",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="with --live: the kubeconfig (default: $KUBECONFIG, else ~/.kube/config)",
    )
    parser.add_argument(
        "--context",
        help="with --live: this context for every environment (default: each environment's "
        "kubeContext in mlopsctl.yaml, else the kubeconfig's current one)",
    )
    parser.add_argument(
        "--record-deployments",
        action="store_true",
        help="with --live and --env: tag each model version that runs in step in the "
        "environment with deployed.<env> (the commit) and deployed.<env>.since, and untag "
        "versions that left",
    )
    add_registry_arguments(parser)
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    if args.record_deployments and not (args.live and args.env):
        # Each environment follows its own registry (mlopsctl.yaml `registries`), whose version
        # numbers are its own: tags go to one environment's registry at a time.
        raise MlopsctlError(
            "--record-deployments needs --live (tags follow what the cluster runs) and --env "
            "(the environment whose registry --mlflow-uri is)"
        )
    space = workspace(args)
    check_environment(space, args.env)
    client = registry(args)
    if args.live:
        # The pins Argo CD deploys: the branch it follows, not this checkout's working tree.
        followed = _followed(space)
        try:
            git.resolve_revision(space.repository, followed)
        except MlopsctlError as error:
            raise MlopsctlError(
                f"--live reads the pins and their commits from {followed}, the branch Argo CD "
                f"follows, in the git history of --repo: {error}"
            ) from error
        with (
            tempfile.TemporaryDirectory(prefix="mlopsctl-status-") as scratch,
            git.worktree(space.repository, followed, Path(scratch)) as tree,
        ):
            pins = inventory.model_pins(inventory.scan(tree, space.config.render_exclude), args.env)
        with contextlib.ExitStack() as stack:
            return _live(args, space, status_rows(pins, client), client, followed, stack)
    pins = inventory.model_pins(
        inventory.scan(space.repository, space.config.render_exclude), args.env
    )
    rows = status_rows(pins, client)
    if args.format == "json":
        print(
            json.dumps(
                {"pins": [asdict(row) for row in rows], "registry_calls": client.calls}, indent=2
            )
        )
    else:
        print_table(
            # FILES last: it is the widest and varies most, so the other columns stay aligned.
            ("ENVIRONMENT", "MODEL", "ALIAS", "GIT", "MLFLOW", "STATE", "RUN", "FILES"),
            [
                (
                    row.environment,
                    row.model,
                    row.alias,
                    row.pinned,
                    row.desired or "-",
                    row.state,
                    row.run_id or "-",
                    ", ".join(short_names(row.environment, row.files)),
                )
                for row in rows
            ],
        )
    return 0 if all(row.in_step for row in rows) else 1


def _followed(space: Any) -> str:
    """The branch Argo CD follows, as this clone last fetched it (else the local branch)."""
    branch = str(space.config.promotion.branch)
    remote = f"origin/{branch}"
    return remote if git.commit_of(space.repository, remote) else branch


def _live(
    args: argparse.Namespace,
    space: Any,
    rows: list[StatusRow],
    client: MlflowRegistry,
    followed: str,
    stack: contextlib.ExitStack,
) -> int:
    kubeconfig = kubeconfig_path(args.kubeconfig)
    clusters: dict[str, EnvironmentReader | str] = {}
    for environment in dict.fromkeys(row.environment for row in rows):
        try:
            kube = KubeApi(kubeconfig, args.context or space.config.kube_context(environment))
        except KubeApiError as error:
            clusters[environment] = str(error)
        else:
            stack.callback(kube.close)
            clusters[environment] = EnvironmentReader(kube, environment)
    live = live_rows(space.repository, followed, rows, clusters)
    recorded: list[str] = []
    if args.record_deployments:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        for environment in clusters:
            recorded += map(str, record_deployments(client, environment, live, now))
    if args.format == "json":
        print(
            json.dumps(
                {
                    "rows": [asdict(row) for row in live],
                    "registry_calls": client.calls,
                    "deployment_tags": recorded,
                },
                indent=2,
            )
        )
    else:
        print_table(
            (
                "ENVIRONMENT",
                "MODEL",
                "ALIAS",
                "MLFLOW",
                "GIT",
                "SYNC",
                "REVISION",
                "HEALTH",
                "OPERATION",
                "HAS COMMIT",
                "SERVED",
                "READY",
                "STATE",
            ),
            [
                (
                    row.environment,
                    row.model,
                    row.alias,
                    row.mlflow,
                    row.git,
                    row.sync,
                    row.revision,
                    row.health,
                    row.operation,
                    {True: "yes", False: "no", None: "-"}[row.contains_promotion],
                    row.served,
                    row.ready,
                    f"{row.state}: {row.detail}" if row.detail else row.state,
                )
                for row in live
            ],
        )
    for line in recorded:
        print(f"deployment tag: {line}", file=sys.stderr)
    return 0 if all(row.in_step for row in live) else 1

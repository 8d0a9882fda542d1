"""`mlopsctl status`: each environment's model pins in Git against the version behind their
alias in MLflow, one row per environment, model and alias with the files that pin it. With
`--live`, on to the cluster: Argo CD's Application and the pods that serve the model.

Exits 1 when any row is out of step (files that disagree included), so CI and cron can act on it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

from mlopsctl import gitops, inventory
from mlopsctl.commands.common import (
    add_registry_arguments,
    add_repository_argument,
    check_environment,
    print_table,
    registry,
    workspace,
)
from mlopsctl.kubeapi import KubeApi, KubeApiError
from mlopsctl.live_cluster import read_cluster
from mlopsctl.live_status import ClusterView, LiveRow, live_row
from mlopsctl.status import StatusRow, short_names, status_rows


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
    add_registry_arguments(parser)
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    check_environment(space, args.env)
    client = registry(args)
    if args.live:
        # The pins Argo CD deploys: the branch it follows, not this checkout's working tree.
        followed = _followed(space)
        with (
            tempfile.TemporaryDirectory(prefix="mlopsctl-status-") as scratch,
            gitops.worktree(space.repository, followed, Path(scratch)) as tree,
        ):
            pins = inventory.model_pins(inventory.scan(tree, space.config.render_exclude), args.env)
        return _live(args, space, status_rows(pins, client), client.calls, followed)
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
    return remote if gitops.commit_of(space.repository, remote) else branch


def _live(
    args: argparse.Namespace, space: Any, rows: list[StatusRow], calls: int, followed: str
) -> int:
    kubeconfig = args.kubeconfig or Path(
        os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config"
    )
    clusters: dict[str, ClusterView | KubeApi] = {}
    live: list[LiveRow] = []
    for row in rows:
        environment = row.environment
        if environment not in clusters:
            context = args.context or space.config.kube_context(environment)
            try:
                clusters[environment] = KubeApi(kubeconfig, context)
            except KubeApiError as error:
                clusters[environment] = ClusterView(error=str(error))
        reached = clusters[environment]
        component = _component(row)
        view = (
            reached
            if isinstance(reached, ClusterView)
            else read_cluster(reached, environment, component)
        )
        contains: bool | None = None
        revision = view.application.synced_revision if view.application else ""
        commit = gitops.last_commit_touching(
            space.repository, followed, [pinned.file for pinned in row.files]
        )
        if commit and revision:
            contains = gitops.contains(space.repository, commit, revision)
        live.append(live_row(row, view, contains))
    for reached in clusters.values():
        if isinstance(reached, KubeApi):
            reached.close()
    if args.format == "json":
        print(
            json.dumps({"rows": [asdict(row) for row in live], "registry_calls": calls}, indent=2)
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
    return 0 if all(row.in_step for row in live) else 1


def _component(row: StatusRow) -> str:
    """The component whose pods serve the model: the model server's, if one of the files is."""
    components = [
        PurePosixPath(pinned.file).parts[2]
        for pinned in row.files
        if len(PurePosixPath(pinned.file).parts) > 3
    ]
    return "model-server" if "model-server" in components else (components or ["model-server"])[0]

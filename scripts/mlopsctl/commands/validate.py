"""`mlopsctl validate [ROOT...]`: render, then schemas, policies and Argo CD checks.

Exit codes: 0 clean, 1 findings, 2 could not run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mlopsctl.base import kustomize, toolchain
from mlopsctl.base.kubeapi import KubeApi, kubeconfig_path
from mlopsctl.commands._arguments import existing_directory
from mlopsctl.commands._workspace import add_repository_argument, select_roots, workspace
from mlopsctl.validate.engine import validate
from mlopsctl.validate.findings import format_json, format_text
from mlopsctl.validate.upstream import write_crd_schemas


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("validate", help="render and check every root")
    parser.add_argument("roots", nargs="*", metavar="ROOT", help="roots to check (default: all)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--network", action="store_true", help="also render roots that need the network"
    )
    parser.add_argument(
        "--schema-dir",
        type=existing_directory,
        action="append",
        default=[],
        help="more custom-resource schemas (<group>/<kind>_<version>.json), checked first",
    )
    parser.add_argument(
        "--upstream-crds",
        action="store_true",
        help="also check custom resources against the upstream CRDs listed in mlopsctl.yaml "
        "(fetches them)",
    )
    parser.add_argument(
        "--server",
        action="store_true",
        help="also apply every rendered resource to an API server with server-side dry-run",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="the API server's kubeconfig (default: $KUBECONFIG, else ~/.kube/config)",
    )
    parser.add_argument("--context", help="the kubeconfig context (default: its current one)")
    parser.add_argument(
        "--prepare-server",
        action="store_true",
        help="for a throwaway API server: install the CRDs made from the project's schemas and "
        "create the namespaces first (for real)",
    )
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    tools = toolchain.resolve(space.tools_dir)
    discovered = kustomize.discover_roots(space.repository, space.config.render_exclude)
    roots = select_roots(args.roots, discovered, space.repository)
    kube: KubeApi | None = None
    if args.server:
        kubeconfig = kubeconfig_path(args.kubeconfig)
        kube = KubeApi(kubeconfig, args.context)
    with tempfile.TemporaryDirectory(prefix="mlopsctl-crds-") as scratch:
        upstream_dir: Path | None = None
        if args.upstream_crds:
            upstream_dir = Path(scratch)
            for line in write_crd_schemas(space.config.upstream_crds, upstream_dir):
                print(f"upstream schema: {line}", file=sys.stderr)
        report = validate(
            space.repository,
            space.config,
            roots,
            tools,
            allow_network=args.network,
            extra_schema_dirs=args.schema_dir,
            all_roots=not args.roots,
            upstream_schema_dir=upstream_dir,
            kube=kube,
            prepare_server=args.prepare_server,
        )
    if kube is not None:
        kube.close()
    if args.format == "json":
        print(
            format_json(
                report.findings,
                roots=report.roots,
                resources_checked=report.resources_checked,
                skipped_schemas=report.skipped_schemas,
                needs_network=report.network_roots,
                schema_checker=report.schema_checker,
            )
        )
    else:
        for note in report.skipped_schemas:
            print(f"schema skipped: {note}", file=sys.stderr)
        for root, reasons in report.network_roots.items():
            print(
                f"{root}: not rendered, needs the network ({'; '.join(reasons)})", file=sys.stderr
            )
        if report.findings:
            print(format_text(report.findings))
        print(
            f"{len(report.findings)} finding(s) in {len(report.roots)} roots, "
            f"{report.resources_checked} resources; schemas: {report.schema_checker}",
            file=sys.stderr,
        )
    return 1 if report.findings else 0

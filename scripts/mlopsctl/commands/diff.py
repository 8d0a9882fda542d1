"""`mlopsctl diff`: what a change does to the rendered manifests, resource by resource.

Exit codes as `argocd app diff`: 0 no change, 1 changes, 2 an error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlopsctl.base import git, toolchain
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.github import pull_requests_from_environment
from mlopsctl.base.registry import MlflowRegistry
from mlopsctl.commands._arguments import positive_integer
from mlopsctl.commands._output import write_atomically
from mlopsctl.commands._workspace import add_repository_argument, workspace
from mlopsctl.diff import report as diff_report
from mlopsctl.diff.revisions import Revision, compare, default_base

SMALLEST_COMMENT = 2_000


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "diff",
        help="render the roots a change affects at two revisions and compare them",
        description="Render every kustomize root that reads a changed file, at the base and "
        "at the head, and show per root and per resource what was added, removed or changed. "
        "Secret values are masked; fields Argo CD is told to ignore are left out. "
        "Exit 0: no change, 1: changes, 2: an error.",
    )
    parser.add_argument(
        "--base",
        help="the revision to compare against, from where the head forked off it "
        "(default: origin/<promotion branch>, else <promotion branch>)",
    )
    parser.add_argument(
        "--head", help="the revision to review (default: the working tree, uncommitted edits too)"
    )
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    parser.add_argument("--output", type=Path, help="write the report to this file, not stdout")
    parser.add_argument(
        "--full-diff",
        type=Path,
        help="also write the whole text diff to this file (the file a cut Markdown names)",
    )
    parser.add_argument(
        "--max-chars",
        type=comment_size,
        default=diff_report.GITHUB_COMMENT_LIMIT,
        help="the longest Markdown to write (default: GitHub's comment limit, 65536)",
    )
    parser.add_argument(
        "--max-lines-per-resource",
        type=positive_integer,
        help="text: show at most this many lines of each resource's diff, saying how many are "
        "left out (default: all; the --full-diff file always has all)",
    )
    parser.add_argument(
        "--network", action="store_true", help="also render roots that fetch remote bases"
    )
    parser.add_argument(
        "--mlflow-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="show the run metrics of moved model pins from this MLflow "
        "(default: $MLFLOW_TRACKING_URI; without one, the versions only)",
    )
    parser.add_argument(
        "--comment-on",
        type=int,
        metavar="PULL_REQUEST",
        help="post the Markdown as the one mlopsctl comment on this pull request, or update it "
        "(needs $GITHUB_TOKEN; $GITHUB_REPOSITORY and $GITHUB_API_URL as in GitHub Actions)",
    )
    add_repository_argument(parser)


def comment_size(text: str) -> int:
    value = int(text)
    if value < SMALLEST_COMMENT:
        raise argparse.ArgumentTypeError(f"must be {SMALLEST_COMMENT} or more, not {value}")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except MlopsctlError as error:
        # Whatever went wrong (git, rendering, arguments), diff's contract is exit code 2.
        raise MlopsctlError(str(error)) from error


def _run(args: argparse.Namespace) -> int:
    space = workspace(args)
    tools = toolchain.resolve(space.tools_dir)
    base_name = args.base or default_base(space.repository, space.config.promotion.branch)
    base_commit = git.resolve_revision(space.repository, base_name)
    if args.head is not None:
        head_commit = git.resolve_revision(space.repository, args.head)
        head = Revision(f"{args.head} ({head_commit[:12]})", head_commit)
    else:
        head_commit = git.resolve_revision(space.repository, "HEAD")
        head = Revision("working tree", None)
    fork_point = git.merge_base(space.repository, base_commit, head_commit)
    base = Revision(f"{base_name} ({fork_point[:12]})", fork_point)
    registry = (
        MlflowRegistry(args.mlflow_uri, timeout_seconds=5.0, attempts=2)
        if args.mlflow_uri
        else None
    )
    report = compare(
        space.repository,
        space.config,
        tools,
        base,
        head,
        allow_network=args.network,
        registry=registry,
        no_registry_reason="no MLflow server given (--mlflow-uri or MLFLOW_TRACKING_URI)",
    )
    # Each rendering of the report is made once, and only when something asks for it.
    wanted = args.format == "text" or args.full_diff is not None
    text = diff_report.text(report) if wanted else ""
    if args.full_diff is not None:
        write_atomically(args.full_diff, text)
    if args.format == "text" and args.max_lines_per_resource is not None:
        text = diff_report.text(report, args.max_lines_per_resource)
    output = diff_report.as_json(report) if args.format == "json" else text
    if args.format == "markdown" or args.comment_on is not None:
        name = args.full_diff.name if args.full_diff is not None else None
        comment, cut = diff_report.markdown(report, args.max_chars, name)
        if cut:
            print(
                f"mlopsctl diff: the Markdown was cut to {args.max_chars} characters",
                file=sys.stderr,
            )
        if args.comment_on is not None:
            pull_requests = pull_requests_from_environment(space.config.repository_url)
            if pull_requests is None:
                raise MlopsctlError("--comment-on needs GITHUB_TOKEN in the environment")
            url = pull_requests.upsert_comment(args.comment_on, diff_report.COMMENT_MARKER, comment)
            print(f"mlopsctl diff: comment {url}", file=sys.stderr)
        if args.format == "markdown":
            output = comment
    if args.output is not None:
        write_atomically(args.output, output)
    else:
        sys.stdout.write(output)
    return diff_report.exit_code(report)

"""`mlopsctl bootstrap --env E`: what the README once asked a person to do by hand to start an
environment's cluster. It checks that the kube context is the environment's cluster, creates the
Secrets the environment expects to be made by hand (`secretsCreatedByHand`; values generated,
never printed; one that exists is kept), installs Argo CD from clusters/<env>/argocd and the
projects and root Application from clusters/<env> (server-side apply), follows the rollout until
every Application is Synced and Healthy, and says how to reach the UIs.

Running it again changes nothing. Exit codes: 0 when all is Synced and Healthy (or --no-wait),
1 when the rollout did not finish in --timeout, 2 on an error (nothing is applied after one).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from mlopsctl.base import toolchain
from mlopsctl.base.argocd import application_sources, normalise_repository_url
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.hand_made_secrets import secret_object
from mlopsctl.base.kubeapi import kubeconfig_path
from mlopsctl.base.kustomize import kustomization_file, render_root, render_roots
from mlopsctl.base.resources import Resource, parse_render
from mlopsctl.bootstrap.cluster import (
    Cluster,
    chosen_context,
    connect,
    watch_applications,
)
from mlopsctl.bootstrap.plan import CONFIRM_FLAG, context_refusal, git_token_refusal, plan_secrets
from mlopsctl.bootstrap.report import (
    ApplicationRender,
    access_lines,
    merged_values,
    timeout_message,
)
from mlopsctl.commands._arguments import positive_seconds
from mlopsctl.commands._workspace import Workspace, add_repository_argument, workspace
from mlopsctl.promote.live_status import ApplicationState
from mlopsctl.validate.charts import chart_sources

DEFAULT_TIMEOUT_SECONDS = 600.0
DEFAULT_GIT_TOKEN_VARIABLE = "GIT_TOKEN"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bootstrap",
        help="install Argo CD, the hand-made Secrets and the root Application into a cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--env", required=True, help="the environment whose cluster this is")
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="the kubeconfig (default: $KUBECONFIG, else ~/.kube/config)",
    )
    parser.add_argument(
        "--context",
        help="the context to use (default: the environment's kubeContext in mlopsctl.yaml, else "
        "the kubeconfig's current one)",
    )
    parser.add_argument(
        CONFIRM_FLAG,
        metavar="CONTEXT",
        help="bootstrap this context although its name does not match the environment "
        "(give the context's name again: it confirms that one context only)",
    )
    parser.add_argument(
        "--git-token-env",
        default=DEFAULT_GIT_TOKEN_VARIABLE,
        metavar="NAME",
        help="the environment variable holding the token for the `git-token` Secret keys "
        f"(default: {DEFAULT_GIT_TOKEN_VARIABLE}); read only when such a Secret is missing",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="how long to wait for every Application to be Synced and Healthy "
        f"(default: {DEFAULT_TIMEOUT_SECONDS:.0f} s)",
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="apply, then stop without following the rollout"
    )
    add_repository_argument(parser)


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    environment = str(args.env)
    if environment not in space.config.environments:
        raise MlopsctlError(
            f"--env {environment!r} is not one of {list(space.config.environments)} "
            f"(mlopsctl.yaml environments)"
        )
    argocd_root, bootstrap_root = f"clusters/{environment}/argocd", f"clusters/{environment}"
    for root in (argocd_root, bootstrap_root):
        if kustomization_file(space.repository / root) is None:
            raise MlopsctlError(f"{space.repository / root}: no kustomization.yaml to apply")

    # Everything that can be refused without the cluster is, before anything is created.
    configured = space.config.kube_context(environment)
    kubeconfig = kubeconfig_path(args.kubeconfig)
    context = chosen_context(kubeconfig, args.context or configured)
    refusal = context_refusal(environment, context, configured, args.confirm_context)
    if refusal is not None:
        raise MlopsctlError(f"{refusal}; nothing was changed")
    tools = toolchain.resolve(space.tools_dir)
    install = _render(space, argocd_root, tools)
    bootstrap = _render(space, bootstrap_root, tools)

    kube = connect(kubeconfig, context)
    try:
        cluster = Cluster(kube)
        print(f"bootstrapping {environment} in context {context} ({kube.server})", flush=True)
        judged = sum(
            cluster.preflight(root, resources)
            for root, resources in ((argocd_root, install), (bootstrap_root, bootstrap))
        )
        print(f"dry run: the API server accepts the {judged} objects it can judge now", flush=True)
        _create_secrets(cluster, space, environment, args.git_token_env)
        for root, resources in ((argocd_root, install), (bootstrap_root, bootstrap)):
            crds, others = cluster.apply_render(root, resources)
            print(
                f"applied {root}: {crds} CRDs and {others} other objects (server-side apply)",
                flush=True,
            )
        done = True
        current: dict[str, ApplicationState] = {}
        if not args.no_wait:
            print(
                f"waiting up to {args.timeout:g} s for every Argo CD Application to be "
                "Synced and Healthy",
                flush=True,
            )
            done, current = watch_applications(
                cluster, args.timeout, lambda line: print(line, flush=True)
            )
    finally:
        kube.close()
    print("\nHow to reach the UIs:")
    for line in access_lines(environment, install, application_renders(space, environment, tools)):
        print(f"  {line}")
    if not done:
        print(f"mlopsctl: {timeout_message(current, args.timeout)}", file=sys.stderr)
        return 1
    return 0


def _render(space: Workspace, root: str, tools: toolchain.Toolchain) -> list[Resource]:
    result = render_root(space.repository, root, tools, allow_network=True)
    if result.error is not None:
        raise MlopsctlError(f"{root} does not render: {result.error}")
    return parse_render(root, result.output)


def _create_secrets(
    cluster: Cluster, space: Workspace, environment: str, token_variable: str
) -> None:
    expected = space.config.secrets_created_by_hand(environment)
    plan = plan_secrets(
        expected,
        cluster.existing_secrets(expected),
        cluster.existing_namespaces(secret.namespace for secret in expected),
    )
    token = os.environ.get(token_variable)
    refusal = git_token_refusal(plan, token, token_variable)
    if refusal is not None:
        raise MlopsctlError(refusal)
    for namespace in plan.namespaces_to_create:
        cluster.create_namespace(namespace)
        print(f"namespace {namespace}: created", flush=True)
    for secret in plan.to_create:
        where = f"Secret {secret.namespace}/{secret.name}"
        keys = ", ".join(key for key, _recipe in secret.keys)
        if cluster.create_secret(secret_object(secret, token or "")):
            print(f"{where}: created with keys {keys} (values generated, not shown)", flush=True)
        else:
            print(f"{where}: appeared meanwhile, kept as it is", flush=True)
    for secret in plan.kept:
        print(f"Secret {secret.namespace}/{secret.name}: exists, kept as it is", flush=True)


def application_renders(
    space: Workspace, environment: str, tools: toolchain.Toolchain
) -> list[ApplicationRender]:
    """The environment's Applications (apps/<env>) with what each deploys, as far as this
    repository renders it without the network: a Kustomize source's objects, a chart's release
    and values. What does not render is left out: this only feeds the hints on the UIs."""
    result = render_root(space.repository, f"apps/{environment}", tools, allow_network=False)
    if not result.rendered:
        return []
    applications = [
        resource
        for resource in parse_render(f"apps/{environment}", result.output)
        if resource.kind == "Application"
    ]
    own = normalise_repository_url(space.config.repository_url)
    paths = {
        application.name: str(source["path"])
        for application in applications
        for _field, source in application_sources(application)
        if source.get("path") and normalise_repository_url(str(source.get("repoURL", ""))) == own
    }
    existing = {
        name: path
        for name, path in paths.items()
        if kustomization_file(space.repository / path) is not None
    }
    rendered = dict(
        zip(
            existing,
            render_roots(space.repository, list(existing.values()), tools, allow_network=False),
            strict=True,
        )
    )
    renders: list[ApplicationRender] = []
    for application in applications:
        found = rendered.get(application.name)
        if found is not None and found.rendered:
            renders.append(
                ApplicationRender(application, tuple(parse_render(found.root, found.output)))
            )
    for chart in chart_sources(applications, space.config.repository_url):
        documents: list[Any] = [_values_file(space.repository / path) for path in chart.value_files]
        documents.append(_values_text(chart.inline_values))
        renders.append(
            ApplicationRender(chart.application, (), chart.release, merged_values(documents))
        )
    return renders


def _values_file(path: Path) -> Any:
    try:
        return _values_text(path.read_text(encoding="utf-8"))
    except OSError:
        return None  # `mlopsctl validate` reports it; the hints do without


def _values_text(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return None

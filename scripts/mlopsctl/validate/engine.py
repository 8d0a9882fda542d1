"""`mlopsctl validate`'s engine: render, then schemas, policies and Argo CD checks.

One function per phase: the tree as written, rendering, policies, schemas, the checks across
roots, then (when asked) Helm charts and the API server.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from mlopsctl.base.config import Config
from mlopsctl.base.errors import PinError
from mlopsctl.base.kubeapi import KubeApi
from mlopsctl.base.kustomize import KUSTOMIZATION_FILENAMES, RenderResult, render_roots, walk_tree
from mlopsctl.base.markers import find_pins
from mlopsctl.base.resources import Resource, parse_render
from mlopsctl.base.toolchain import Toolchain
from mlopsctl.validate import (
    argocd_checks,
    charts,
    policies,
    server_validation,
    topology,
    wave_order,
)
from mlopsctl.validate.findings import Finding, RootState
from mlopsctl.validate.schemas.store import SchemaProblem, SchemaStore, kubeconform_problems
from mlopsctl.validate.sources import SourceIndex

# Resources a promotion's edit may render before its schemas are checked by kubeconform rather
# than in this process: measured, kubeconform's start-up (about 35 ms) is worth it from a few
# dozen resources on; one model pin renders a handful.
EDIT_RESOURCES_IN_PROCESS = 50


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    skipped_schemas: list[str] = field(default_factory=list)
    network_roots: dict[str, list[str]] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)
    resources_checked: int = 0
    schema_checker: str = ""


def _kustomization_files(repository: Path, exclude: Sequence[str]) -> list[Path]:
    """Every kustomization file in the tree (roots, bases and components alike)."""
    return [
        directory / name
        for directory, files in walk_tree(repository, exclude)
        for name in files
        if name in KUSTOMIZATION_FILENAMES
    ]


def _marker_problems(repository: Path, exclude: Sequence[str]) -> list[Finding]:
    """Markers the promoter could not follow, one finding per file.

    Checked here so that a broken marker fails validation in CI, not every promotion pass after
    the merge.
    """
    findings = []
    for directory, files in walk_tree(repository, exclude):
        for name in files:
            if not name.endswith((".yaml", ".yml")) and name != "Kustomization":
                continue
            path = directory / name
            text = path.read_bytes().decode("utf-8", errors="replace")
            if "mlopsctl:" not in text:
                continue
            relative = path.relative_to(repository).as_posix()
            try:
                find_pins(text, relative)
            except PinError as error:
                message = str(error)
                if message.startswith(f"{relative}:"):
                    message = "line " + message.removeprefix(f"{relative}:")
                findings.append(Finding(relative, "", "", message, "pin-marker"))
    return findings


def validate(
    repository: Path,
    config: Config,
    roots: Sequence[str],
    toolchain: Toolchain,
    allow_network: bool = False,
    extra_schema_dirs: Sequence[Path] = (),
    all_roots: bool = True,
    upstream_schema_dir: Path | None = None,
    kube: KubeApi | None = None,
    prepare_server: bool = False,
    in_process_up_to: int = 0,
) -> Report:
    """Render the roots, then run each phase over what rendered; findings sorted, each once.

    Up to `in_process_up_to` resources are checked against their schemas in this process, not
    by starting kubeconform: the same strict schemas, without a process's start-up, which is
    most of the time for the few resources one promotion touches."""
    repository = repository.resolve()
    report = Report(roots=list(roots))
    index = SourceIndex(repository)
    store = SchemaStore(config.kubernetes_version, extra_schema_dirs)
    upstream = (
        SchemaStore(config.kubernetes_version, [upstream_schema_dir], include_project_schemas=False)
        if upstream_schema_dir is not None
        else None
    )
    results = render_roots(repository, roots, toolchain, allow_network)

    if all_roots:
        report.findings.extend(_tree_findings(repository, config))
    states, rendered_text = _rendered(results, index, report)
    everything = [resource for state in states.values() for resource in state.resources]
    report.resources_checked = len(everything)
    report.findings.extend(_policy_findings(everything, index))
    checker = (
        toolchain if len(everything) > in_process_up_to else replace(toolchain, kubeconform=None)
    )
    report.findings.extend(
        _schema_findings(everything, config, store, upstream, checker, rendered_text, index, report)
    )
    if all_roots:
        report.findings.extend(_cross_root_findings(repository, config, states, store, index))
    if all_roots and allow_network:
        report.findings.extend(_chart_findings(repository, config, states, toolchain, index))
    if kube is not None:
        if prepare_server:
            server_validation.prepare(kube, everything)
        report.findings.extend(server_validation.server_findings(kube, everything, index))

    report.findings = sorted(set(report.findings))
    return report


def edit_findings(
    clone: Path, config: Config, roots: Sequence[str], toolchain: Toolchain
) -> list[str]:
    """The findings of the roots an edit touches, one line each: promotion's validator."""
    report = validate(
        clone, config, roots, toolchain, all_roots=False, in_process_up_to=EDIT_RESOURCES_IN_PROCESS
    )
    return [
        f"{finding.file}: {finding.resource}: {finding.field}: {finding.message}"
        for finding in report.findings
    ]


def _located(
    index: SourceIndex, resource: Resource, field_name: str, message: str, check: str
) -> Finding:
    """A finding about a rendered resource, located at the source file it came from."""
    return Finding(
        index.locate(resource), resource.reference, field_name, message, check, resource.root
    )


def _tree_findings(repository: Path, config: Config) -> list[Finding]:
    """Phase 1, the tree as written: every kustomization file's fields, every pin marker."""
    findings = []
    for path in _kustomization_files(repository, config.render_exclude):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if isinstance(document, dict):
            relative = path.relative_to(repository).as_posix()
            for field_name, message, check in policies.kustomization_problems(document):
                findings.append(Finding(relative, "", field_name, message, check))
    findings.extend(_marker_problems(repository, config.render_exclude))
    return findings


def _rendered(
    results: Sequence[RenderResult], index: SourceIndex, report: Report
) -> tuple[dict[str, RootState], dict[str, str]]:
    """Phase 2, rendering: each root's state and output; what did not render, or warned, is a
    finding, and roots skipped for needing the network are noted in the report."""
    states: dict[str, RootState] = {}
    rendered_text: dict[str, str] = {}
    for result in results:
        states[result.root] = _root_state(result)
        if result.network and result.skipped:
            report.network_roots[result.root] = result.network
        kustomization = index.kustomization_of(result.root)
        if result.error is not None:
            report.findings.append(
                Finding(
                    kustomization,
                    "",
                    "",
                    f"does not render: {result.error}",
                    "renders",
                    result.root,
                )
            )
        for warning in result.warnings:
            report.findings.append(
                Finding(
                    kustomization,
                    "",
                    "",
                    f"kustomize warning: {warning}",
                    "kustomize-warning",
                    result.root,
                )
            )
        if result.output:
            rendered_text[result.root] = result.output
    return states, rendered_text


def _policy_findings(everything: Sequence[Resource], index: SourceIndex) -> list[Finding]:
    """Phase 3, each rendered resource against the policies."""
    return [
        _located(index, resource, field_name, message, check)
        for resource in everything
        for check, policy in policies.RESOURCE_POLICIES.items()
        for field_name, message in policy(resource)
    ]


def _schema_findings(
    everything: Sequence[Resource],
    config: Config,
    store: SchemaStore,
    upstream: SchemaStore | None,
    toolchain: Toolchain,
    rendered_text: dict[str, str],
    index: SourceIndex,
    report: Report,
) -> list[Finding]:
    """Phase 4, each rendered resource against its schema (kubeconform's when it is installed,
    the project's for custom resources, upstream CRDs' when asked); kinds skipped on purpose are
    noted in the report, and the checker that ran is named there."""
    skipped = {(item.api_version, item.kind): item.reason for item in config.skipped_schemas}

    kubeconform_found: dict[tuple[str, str, str], list[SchemaProblem]] | None = None
    if toolchain.kubeconform and rendered_text:
        report.schema_checker = f"kubeconform ({toolchain.kubeconform}) + project schemas"
        kubeconform_found = kubeconform_problems(
            toolchain.kubeconform, config.kubernetes_version, rendered_text
        )
    else:
        report.schema_checker = (
            f"kubernetes-validate strict schemas for Kubernetes {config.kubernetes_version} "
            "+ project schemas"
        )

    findings = []
    for resource in everything:
        custom = store.custom_schema_path(resource.api_version, resource.kind) is not None
        problems: list[SchemaProblem] | None
        known = store.validator(resource.api_version, resource.kind) is not None
        if kubeconform_found is not None and not custom and known:
            problems = kubeconform_found.get((resource.root, resource.kind, resource.name), [])
        else:
            problems = store.check(resource)
        if problems is None:
            reason = skipped.get((resource.api_version, resource.kind))
            if reason is None:
                findings.append(
                    _located(
                        index,
                        resource,
                        "apiVersion",
                        f"no schema for {resource.api_version} {resource.kind}: add one under "
                        "scripts/mlopsctl/validate/schemas or list it in mlopsctl.yaml "
                        "validate.skipSchemas",
                        "schema",
                    )
                )
            else:
                note = f"{resource.api_version} {resource.kind}: {reason}"
                if note not in report.skipped_schemas:
                    report.skipped_schemas.append(note)
            continue
        for schema_problem in problems:
            findings.append(
                _located(index, resource, schema_problem.field, schema_problem.message, "schema")
            )
        if upstream is not None and custom:
            for schema_problem in upstream.check(resource) or []:
                findings.append(
                    _located(
                        index,
                        resource,
                        schema_problem.field,
                        schema_problem.message,
                        "upstream-schema",
                    )
                )
    return findings


def _cross_root_findings(
    repository: Path,
    config: Config,
    states: dict[str, RootState],
    store: SchemaStore,
    index: SourceIndex,
) -> list[Finding]:
    """Phase 5, across roots: Argo CD objects, the topology of registries and promoters, and the
    order of sync waves."""

    def is_cluster_scoped(resource: Resource) -> bool:
        declared = store.is_cluster_scoped(resource.api_version, resource.kind)
        return argocd_checks.is_cluster_scoped_builtin(resource) if declared is None else declared

    findings = []
    for problem in itertools.chain(
        argocd_checks.check_argocd(
            states,
            config.repository_url,
            config.environments,
            lambda relative: (repository / relative).exists(),
            is_cluster_scoped,
        ),
        topology.check_topology(states, config),
        wave_order.check_wave_order(
            states, config, lambda relative: _read_text(repository / relative)
        ),
    ):
        if problem.resource is None:
            findings.append(
                Finding(problem.file, "", problem.field, problem.message, problem.check)
            )
        else:
            findings.append(
                _located(index, problem.resource, problem.field, problem.message, problem.check)
            )
    return findings


def _chart_findings(
    repository: Path,
    config: Config,
    states: dict[str, RootState],
    toolchain: Toolchain,
    index: SourceIndex,
) -> list[Finding]:
    """The chart workloads of every Application, rendered by helm, held to the chart policies."""
    applications = [
        resource
        for state in states.values()
        for resource in state.resources
        if resource.kind == "Application" and resource.group == "argoproj.io"
    ]
    sources = charts.chart_sources(applications, config.repository_url)
    if not sources:
        return []
    findings: list[Finding] = []
    if toolchain.helm is None:
        for source in sources:
            findings.append(
                Finding(
                    index.locate(source.application),
                    source.application.reference,
                    source.field,
                    f"{source.describe()}: not rendered, no helm (`mlopsctl tools install`)",
                    "renders",
                    source.application.root,
                )
            )
        return findings
    helm = toolchain.helm
    with ThreadPoolExecutor(max_workers=4) as pool:
        rendered = list(
            pool.map(lambda source: charts.render_chart(source, repository, helm), sources)
        )
    for source, (output, error) in zip(sources, rendered, strict=True):
        where = index.locate(source.application)
        if error is not None:
            findings.append(
                Finding(
                    where,
                    source.application.reference,
                    source.field,
                    f"{source.describe()} does not render: {error}",
                    "renders",
                    source.application.root,
                )
            )
            continue
        for resource in parse_render(source.application.root, output):
            for check in charts.CHART_POLICIES:
                for field_name, message in policies.RESOURCE_POLICIES[check](resource):
                    findings.append(
                        Finding(
                            where,
                            resource.reference,
                            field_name,
                            f"{source.describe()}: {message}",
                            check,
                            source.application.root,
                        )
                    )
    return findings


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _root_state(result: RenderResult) -> RootState:
    return RootState(
        error=result.error,
        resources=tuple(parse_render(result.root, result.output)) if result.output else (),
    )

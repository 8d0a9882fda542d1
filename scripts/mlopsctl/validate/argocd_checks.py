"""Checks across Argo CD objects: Applications against their AppProjects, against the tree,
and against each other across environments. Pure: rendered resources in, problems out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any

from mlopsctl.base.argocd import (
    SYNC_WAVE,
    application_sources,
    environment_of,
    normalise_repository_url,
)
from mlopsctl.base.resources import BUILTIN_CLUSTER_SCOPED_KINDS, Resource
from mlopsctl.validate.findings import Problem, RootState

NAME_LABEL = "app.kubernetes.io/name"


def _glob(pattern: Any, value: str) -> bool:
    return isinstance(pattern, str) and fnmatchcase(value, pattern)


def _allows_source(project: Resource, repository_url: str) -> bool:
    patterns = project.body.get("spec", {}).get("sourceRepos") or []
    return any(
        _glob(pattern, repository_url)
        or _glob(normalise_repository_url(str(pattern)), normalise_repository_url(repository_url))
        for pattern in patterns
    )


def _allows_destination(project: Resource, server: str, name: str, namespace: str) -> bool:
    for destination in project.body.get("spec", {}).get("destinations") or []:
        if not isinstance(destination, dict):
            continue
        cluster_ok = (server and _glob(destination.get("server"), server)) or (
            name and _glob(destination.get("name"), name)
        )
        if cluster_ok and _glob(destination.get("namespace", ""), namespace):
            return True
    return False


def _kind_listed(entries: Any, group: str, kind: str) -> bool:
    return any(
        isinstance(entry, dict)
        and _glob(entry.get("group", ""), group)
        and _glob(entry.get("kind", ""), kind)
        for entry in entries or []
    )


def _allows_kind(project: Resource, resource: Resource, cluster_scoped: bool) -> str | None:
    spec = project.body.get("spec", {})
    if cluster_scoped:
        if not _kind_listed(spec.get("clusterResourceWhitelist"), resource.group, resource.kind):
            return "clusterResourceWhitelist"
        if _kind_listed(spec.get("clusterResourceBlacklist"), resource.group, resource.kind):
            return "clusterResourceBlacklist"
        return None
    if "namespaceResourceWhitelist" in spec and not _kind_listed(
        spec["namespaceResourceWhitelist"], resource.group, resource.kind
    ):
        return "namespaceResourceWhitelist"
    if _kind_listed(spec.get("namespaceResourceBlacklist"), resource.group, resource.kind):
        return "namespaceResourceBlacklist"
    return None


def check_argocd(
    roots: Mapping[str, RootState],
    repository_url: str,
    environments: tuple[str, ...],
    path_exists: Callable[[str], bool],
    is_cluster_scoped: Callable[[Resource], bool],
) -> Iterator[Problem]:
    everything = [resource for state in roots.values() for resource in state.resources]
    projects: dict[tuple[str | None, str], Resource] = {
        (environment_of(resource.root), resource.name): resource
        for resource in everything
        if resource.kind == "AppProject" and resource.group == "argoproj.io"
    }
    applications = [
        resource
        for resource in everything
        if resource.kind == "Application" and resource.group == "argoproj.io"
    ]
    own_repository = normalise_repository_url(repository_url)
    for application in applications:
        yield from _check_application(
            application, projects, roots, own_repository, path_exists, is_cluster_scoped
        )
    yield from _check_environments_match(applications, roots, environments)


def _check_application(
    application: Resource,
    projects: Mapping[tuple[str | None, str], Resource],
    roots: Mapping[str, RootState],
    own_repository: str,
    path_exists: Callable[[str], bool],
    is_cluster_scoped: Callable[[Resource], bool],
) -> Iterator[Problem]:
    spec = application.body.get("spec") or {}
    environment = environment_of(application.root)
    project_name = str(spec.get("project", ""))
    project = projects.get((environment, project_name))
    if project is None:
        yield Problem(
            application,
            "spec.project",
            f"AppProject {project_name!r} is not defined in clusters/{environment}",
            "argocd-project",
        )
    destination = spec.get("destination") or {}
    server = str(destination.get("server", ""))
    cluster_name = str(destination.get("name", ""))
    namespace = str(destination.get("namespace", ""))
    if project is not None and not _allows_destination(project, server, cluster_name, namespace):
        yield Problem(
            application,
            "spec.destination",
            f"AppProject {project_name!r} does not allow destination "
            f"{server or cluster_name} namespace {namespace!r}",
            "argocd-project",
        )
    references = {
        str(source["ref"]): source
        for _path, source in application_sources(application)
        if "ref" in source
    }
    for path, source in application_sources(application):
        repository = str(source.get("repoURL", ""))
        if project is not None and not _allows_source(project, repository):
            yield Problem(
                application,
                f"{path}.repoURL",
                f"AppProject {project_name!r} does not allow source repository {repository!r}",
                "argocd-project",
            )
        for index, value_file in enumerate((source.get("helm") or {}).get("valueFiles") or []):
            yield from _check_value_file(
                application,
                f"{path}.helm.valueFiles[{index}]",
                str(value_file),
                references,
                own_repository,
                path_exists,
            )
        if normalise_repository_url(repository) != own_repository or "path" not in source:
            continue
        source_path = str(source["path"]).strip("/")
        if not path_exists(source_path):
            yield Problem(
                application,
                f"{path}.path",
                f"path {source_path!r} does not exist in this repository",
                "argocd-path",
            )
            continue
        state = roots.get(source_path)
        if state is None:
            yield Problem(
                application,
                f"{path}.path",
                f"path {source_path!r} is not a kustomize root (no kustomization file)",
                "argocd-path",
            )
            continue
        if state.error is not None:
            yield Problem(
                application,
                f"{path}.path",
                f"path {source_path!r} does not render: {state.error}",
                "argocd-path",
            )
            continue
        if project is None:
            continue
        for resource in state.resources:
            cluster_scoped = is_cluster_scoped(resource)
            refusing_list = _allows_kind(project, resource, cluster_scoped)
            if refusing_list is not None:
                yield Problem(
                    application,
                    f"{path}.path",
                    f"{resource.reference} from {source_path} is refused by AppProject "
                    f"{project_name!r} ({refusing_list})",
                    "argocd-project",
                )
            elsewhere = resource.namespace and resource.namespace != namespace
            if (
                not cluster_scoped
                and elsewhere
                and not _allows_destination(project, server, cluster_name, resource.namespace)
            ):
                yield Problem(
                    application,
                    f"{path}.path",
                    f"{resource.reference} from {source_path} targets namespace "
                    f"{resource.namespace!r}, which AppProject {project_name!r} does not allow",
                    "argocd-project",
                )


def _check_value_file(
    application: Resource,
    field: str,
    value_file: str,
    references: Mapping[str, dict[str, Any]],
    own_repository: str,
    path_exists: Callable[[str], bool],
) -> Iterator[Problem]:
    if not value_file.startswith("$"):
        return
    reference, _, relative = value_file[1:].partition("/")
    source = references.get(reference)
    if source is None:
        yield Problem(application, field, f"no source has ref {reference!r}", "argocd-path")
    elif normalise_repository_url(
        str(source.get("repoURL", ""))
    ) == own_repository and not path_exists(relative):
        yield Problem(
            application,
            field,
            f"values file {relative!r} does not exist in this repository",
            "argocd-path",
        )


def _component_of(application: Resource, environment: str) -> str:
    return str(
        application.labels.get(NAME_LABEL) or application.name.removesuffix(f"-{environment}")
    )


def _check_environments_match(
    applications: list[Resource], roots: Mapping[str, RootState], environments: tuple[str, ...]
) -> Iterator[Problem]:
    waves: dict[str, dict[str, tuple[str, Resource]]] = defaultdict(dict)
    for application in applications:
        environment = environment_of(application.root)
        if environment is None or not application.root.startswith("apps/"):
            continue
        component = _component_of(application, environment)
        wave = str(application.annotations.get(SYNC_WAVE, "0"))
        waves[environment][component] = (wave, application)
        expected_name = f"{component}-{environment}"
        if application.name != expected_name:
            yield Problem(
                application,
                "metadata.name",
                f"Application for component {component!r} in {environment} should be named "
                f"{expected_name!r}",
                "environments-match",
            )
    deploys_through_apps = any(root.startswith("apps/") for root in roots)
    for environment in environments:
        if deploys_through_apps and f"apps/{environment}" not in roots:
            yield Problem(
                None,
                "",
                f"environment {environment!r} has no apps/{environment} kustomization",
                "environments-match",
                file=f"apps/{environment}",
            )
    components = sorted({component for per_env in waves.values() for component in per_env})
    for component in components:
        present = {env: waves[env][component] for env in environments if component in waves[env]}
        for environment in environments:
            if f"apps/{environment}" in roots and environment not in present:
                others = ", ".join(sorted(present))
                yield Problem(
                    None,
                    "",
                    f"component {component!r} is deployed in {others} but not in {environment}",
                    "environments-match",
                    file=f"apps/{environment}",
                )
        distinct = {wave for wave, _application in present.values()}
        if len(distinct) > 1:
            summary = ", ".join(f"{env}={wave}" for env, (wave, _a) in sorted(present.items()))
            message = f"component {component!r} has different sync waves ({summary})"
            for _environment, (_wave, application) in sorted(present.items()):
                yield Problem(
                    application, f"metadata.annotations.{SYNC_WAVE}", message, "environments-match"
                )


def is_cluster_scoped_builtin(resource: Resource) -> bool:
    return resource.kind in BUILTIN_CLUSTER_SCOPED_KINDS

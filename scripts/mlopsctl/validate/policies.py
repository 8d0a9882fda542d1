"""Policies every rendered resource must meet. Pure: resources in, (field, message) out.

Each policy has a name (printed with its findings, used in tests) and one job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mlopsctl.base.argocd import application_sources
from mlopsctl.base.resources import Resource

Problem = tuple[str, str]  # (field path, message)

RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
)
POD_TEMPLATE_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component")
# A workload whose program cannot run on a read-only root names the reason in this annotation.
WRITABLE_ROOT_ANNOTATION = "mlopsctl.io/writable-root-filesystem"
LONG_RUNNING_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
_EXACT_SEMVER = re.compile(r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


@dataclass(frozen=True)
class PodSpec:
    path: str
    spec: dict[str, Any]
    template_labels: dict[str, Any] | None
    long_running: bool


def pod_spec(resource: Resource) -> PodSpec | None:
    body = resource.body
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return None
    if resource.kind == "Pod":
        return PodSpec("spec", spec, None, True)
    if resource.kind == "CronJob":
        job = spec.get("jobTemplate", {}).get("spec", {})
        template, path = job.get("template"), "spec.jobTemplate.spec.template"
    elif resource.kind in LONG_RUNNING_KINDS or resource.kind == "Job":
        template, path = spec.get("template"), "spec.template"
    else:
        return None
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return None
    labels = template.get("metadata", {}).get("labels") or {}
    return PodSpec(f"{path}.spec", template["spec"], labels, resource.kind in LONG_RUNNING_KINDS)


def containers(pod: PodSpec) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(field path, container, is_init) for every container of the pod."""
    for key, is_init in (
        ("initContainers", True),
        ("containers", False),
        ("ephemeralContainers", True),
    ):
        for index, container in enumerate(pod.spec.get(key) or []):
            if isinstance(container, dict):
                yield f"{pod.path}.{key}[{index}]", container, is_init


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference."""
    name, _, digest = image.partition("@")
    last_segment = name.rsplit("/", 1)[-1]
    if ":" in last_segment:
        name, _, tag = name.rpartition(":")
        return name, tag, digest or None
    return name, None, digest or None


def image_problem(image: str) -> str | None:
    _name, tag, digest = split_image(image)
    if digest:
        return None
    if tag is None:
        return f"image {image!r} has no tag: pin an exact version or digest"
    if tag == "latest":
        return f"image {image!r} uses the mutable tag 'latest': pin an exact version or digest"
    return None


def check_images(resource: Resource) -> Iterator[Problem]:
    pod = pod_spec(resource)
    if pod is not None:
        for path, container, _init in containers(pod):
            image = container.get("image")
            if not isinstance(image, str) or not image:
                yield f"{path}.image", "container has no image"
            elif (problem := image_problem(image)) is not None:
                yield f"{path}.image", problem
    if resource.kind == "Cluster" and resource.group == "postgresql.cnpg.io":
        image = resource.body.get("spec", {}).get("imageName")
        if isinstance(image, str) and (problem := image_problem(image)) is not None:
            yield "spec.imageName", problem


def is_exact_version(version: str) -> bool:
    return bool(_EXACT_SEMVER.match(version))


def check_chart_versions(resource: Resource) -> Iterator[Problem]:
    if resource.kind != "Application" or resource.group != "argoproj.io":
        return
    for path, source in application_sources(resource):
        if "chart" not in source:
            continue
        version = str(source.get("targetRevision", ""))
        if not is_exact_version(version):
            yield (
                f"{path}.targetRevision",
                f"chart {source['chart']!r} version {version!r} is not one exact version "
                "(ranges, wildcards and empty versions let the deployed chart change unseen)",
            )


def check_resources(resource: Resource) -> Iterator[Problem]:
    pod = pod_spec(resource)
    if pod is None:
        return
    for path, container, is_init in containers(pod):
        if path.split(".")[-1].startswith("ephemeralContainers"):
            continue  # ephemeral containers cannot declare resources
        declared = container.get("resources") or {}
        for section in ("requests", "limits"):
            values = declared.get(section) or {}
            for resource_name in ("cpu", "memory"):
                if resource_name not in values:
                    kind = "init container" if is_init else "container"
                    name = container.get("name", "?")
                    yield (
                        f"{path}.resources.{section}.{resource_name}",
                        f"{kind} {name!r} sets no {resource_name} {section[:-1]}",
                    )


def check_probes(resource: Resource) -> Iterator[Problem]:
    pod = pod_spec(resource)
    if pod is None or not pod.long_running:
        return
    for path, container, is_init in containers(pod):
        if is_init:
            continue
        for probe in ("readinessProbe", "livenessProbe"):
            if not isinstance(container.get(probe), dict):
                yield f"{path}.{probe}", f"container {container.get('name', '?')!r} has no {probe}"


def check_security_context(resource: Resource) -> Iterator[Problem]:
    pod = pod_spec(resource)
    if pod is None:
        return
    pod_context = pod.spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.spec.get(flag):
            yield f"{pod.path}.{flag}", f"{flag} breaks the restricted pod security standard"
    writable_reason = resource.annotations.get(WRITABLE_ROOT_ANNOTATION)
    for path, container, _init in containers(pod):
        context = container.get("securityContext") or {}
        name = container.get("name", "?")
        # A container's own setting wins over the pod's, as in the kubelet.
        effective = {**pod_context, **context}
        if effective.get("runAsNonRoot") is not True:
            yield f"{path}.securityContext.runAsNonRoot", f"container {name!r} may run as root"
        if effective.get("runAsUser") == 0:
            yield f"{path}.securityContext.runAsUser", f"container {name!r} runs as user 0"
        seccomp = (effective.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            yield (
                f"{path}.securityContext.seccompProfile.type",
                f"container {name!r} has no RuntimeDefault seccomp profile",
            )
        if context.get("allowPrivilegeEscalation") is not False:
            yield (
                f"{path}.securityContext.allowPrivilegeEscalation",
                f"container {name!r} must set allowPrivilegeEscalation: false",
            )
        if context.get("privileged"):
            yield f"{path}.securityContext.privileged", f"container {name!r} is privileged"
        dropped = (context.get("capabilities") or {}).get("drop") or []
        if "ALL" not in dropped:
            yield (
                f"{path}.securityContext.capabilities.drop",
                f"container {name!r} must drop ALL capabilities",
            )
        if context.get("readOnlyRootFilesystem") is not True and not writable_reason:
            yield (
                f"{path}.securityContext.readOnlyRootFilesystem",
                f"container {name!r} has a writable root filesystem; mount emptyDirs where it "
                f"writes, or give the reason in the {WRITABLE_ROOT_ANNOTATION} annotation",
            )


def check_labels(resource: Resource) -> Iterator[Problem]:
    for label in RECOMMENDED_LABELS:
        if not resource.labels.get(label):
            yield f"metadata.labels.{label}", f"missing recommended label {label}"
    pod = pod_spec(resource)
    if pod is not None and pod.template_labels is not None:
        template_path = pod.path.removesuffix(".spec")
        for label in POD_TEMPLATE_LABELS:
            if not pod.template_labels.get(label):
                yield (
                    f"{template_path}.metadata.labels.{label}",
                    f"pod template lacks label {label}",
                )


def check_secret_data(resource: Resource) -> Iterator[Problem]:
    if resource.kind != "Secret" or resource.api_version != "v1":
        return
    for key in ("data", "stringData"):
        if resource.body.get(key):
            yield (
                key,
                "a Secret with data is committed to Git: deliver it through an ExternalSecret "
                "(staging, production) or create it by hand (local, see the README)",
            )


ResourcePolicy = Callable[[Resource], Iterator[Problem]]

RESOURCE_POLICIES: dict[str, ResourcePolicy] = {
    "pinned-images": check_images,
    "pinned-charts": check_chart_versions,
    "requests-and-limits": check_resources,
    "probes": check_probes,
    "restricted-security": check_security_context,
    "recommended-labels": check_labels,
    "no-secret-data": check_secret_data,
}

# Fields Kustomize 5 deprecates, with what replaces each.
DEPRECATED_KUSTOMIZE_FIELDS = {
    "commonLabels": "labels",
    "vars": "replacements",
    "bases": "resources",
    "patchesStrategicMerge": "patches",
    "patchesJson6902": "patches",
    "imageTags": "images",
}


def kustomization_problems(document: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(field, message, check) for a kustomization file itself, before anything renders."""
    for field_name, replacement in DEPRECATED_KUSTOMIZE_FIELDS.items():
        if field_name in document:
            yield (
                field_name,
                f"deprecated Kustomize field {field_name!r}: use {replacement!r}",
                "kustomize-deprecated",
            )
    for index, chart in enumerate(document.get("helmCharts") or []):
        version = str(chart.get("version", "")) if isinstance(chart, dict) else ""
        if not is_exact_version(version):
            yield (
                f"helmCharts[{index}].version",
                f"chart version {version!r} is not one exact version",
                "pinned-charts",
            )

"""A first sync from nothing finishes: every Secret and ConfigMap a workload reads is made by its
own sync wave or an earlier one. Pure: rendered roots, the Helm values files and the config in,
problems out.

Argo CD applies one wave of Applications, then waits until every one of them is Healthy before
it applies the next. A pod that reads a Secret only a later wave makes never starts, so its
Application never turns Healthy and the later wave is never applied: a new cluster's first sync
stops there for good (an existing cluster hides it, because the Secret is already there).
What reads: pod templates (env, envFrom, volumes, image pull secrets), ingress-nginx's
`auth-secret`, CloudNativePG's bootstrap and superuser Secrets, and the charts' values that name
an object the chart does not make itself (`existingSecret`-style keys, and the `secrets` and
`configMaps` the Prometheus Operator mounts). What makes: manifests, ExternalSecrets (their
target), CloudNativePG Clusters (their `-app` Secret), cert-manager (an Ingress's TLS Secrets,
a Certificate's), and a person: `secretsCreatedByHand` in mlopsctl.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mlopsctl.base.argocd import (
    SYNC_WAVE,
    application_sources,
    environment_of,
    normalise_repository_url,
)
from mlopsctl.base.config import CONFIG_FILENAME, Config
from mlopsctl.base.resources import Resource
from mlopsctl.validate.findings import Problem, RootState
from mlopsctl.validate.policies import PodSpec, containers, pod_spec

CHECK = "wave-order"
AUTH_SECRET_ANNOTATION = "nginx.ingress.kubernetes.io/auth-secret"
_CERT_MANAGER_ANNOTATIONS = ("cert-manager.io/cluster-issuer", "cert-manager.io/issuer")
# Chart values that name an object the chart reads but leaves to someone else to make.
_EXISTING_SECRET_KEY = re.compile(r"^(existingSecret(Name)?|[A-Za-z]+ExistingSecret)$")
_EXISTING_CONFIG_MAP_KEY = re.compile(r"^(existingConfigMap(Name)?|[A-Za-z]+ExistingConfigMap)$")

ObjectKey = tuple[str, str, str]  # kind, namespace, name


@dataclass(frozen=True)
class Maker:
    wave: int
    description: str


@dataclass(frozen=True)
class Need:
    key: ObjectKey
    field: str
    optional: bool = False


def check_wave_order(
    roots: Mapping[str, RootState],
    config: Config,
    read_file: Callable[[str], str | None],
) -> Iterator[Problem]:
    """`read_file` gives the text of a file of this repository by its relative path (None when
    there is none): the values files chart Applications name."""
    own_repository = normalise_repository_url(config.repository_url)
    for environment in config.environments:
        applications = [
            resource
            for root, state in sorted(roots.items())
            if root.startswith("apps/") and environment_of(root) == environment
            for resource in state.resources
            if resource.kind == "Application" and resource.group == "argoproj.io"
        ]
        if applications:
            yield from _check_environment(
                environment, applications, roots, config, own_repository, read_file
            )


def _check_environment(
    environment: str,
    applications: list[Resource],
    roots: Mapping[str, RootState],
    config: Config,
    own_repository: str,
    read_file: Callable[[str], str | None],
) -> Iterator[Problem]:
    makers: dict[ObjectKey, Maker] = {}

    def made(key: ObjectKey, maker: Maker) -> None:
        if key not in makers or maker.wave < makers[key].wave:
            makers[key] = maker

    for secret in config.secrets_created_by_hand(environment):
        made(
            ("Secret", secret.namespace, secret.name),
            Maker(-(2**31), f"a person ({CONFIG_FILENAME} secretsCreatedByHand.{environment})"),
        )
    # (application, its wave, where the need is, need): `where` is a rendered resource, or the
    # values file that names the object.
    needs: list[tuple[Resource, int, Resource | str, Need]] = []
    for application in applications:
        wave = _wave(application)
        if wave is None:
            continue  # not a number: Argo CD refuses the Application, and so does another check
        spec = application.body.get("spec") or {}
        namespace = str((spec.get("destination") or {}).get("namespace", ""))
        references = {
            str(source["ref"]): source
            for _path, source in application_sources(application)
            if "ref" in source
        }
        for path, source in application_sources(application):
            own = normalise_repository_url(str(source.get("repoURL", ""))) == own_repository
            if own and "path" in source:
                state = roots.get(str(source["path"]).strip("/"))
                for resource in state.resources if state is not None else ():
                    resource_namespace = resource.namespace or namespace
                    for key in makes(resource, resource_namespace):
                        made(key, Maker(wave, f"{resource.reference} of {application.name}"))
                    for need in reads(resource, resource_namespace):
                        needs.append((application, wave, resource, need))
            helm = source.get("helm")
            if isinstance(helm, dict):
                for values_file, values in _helm_values(
                    path, helm, references, own_repository, read_file
                ):
                    for need in chart_reads(values, namespace):
                        needs.append((application, wave, values_file, need))
    for application, wave, where, need in needs:
        if need.optional:
            continue
        kind, namespace, name = need.key
        maker = makers.get(need.key)
        reader = f"{application.name} (wave {wave})"
        if maker is None:
            message = (
                f"{kind} {namespace}/{name}, read by {reader}, is created by nothing in "
                f"environment {environment!r}: no manifest or operator of any wave makes it, and "
                f"{CONFIG_FILENAME} secretsCreatedByHand.{environment} does not list it"
            )
        elif maker.wave > wave:
            message = (
                f"{kind} {namespace}/{name} is read by {reader} but made at wave {maker.wave} "
                f"by {maker.description}: Argo CD waits for wave {wave} to be Healthy before it "
                f"applies wave {maker.wave}, so a first sync of {environment} never finishes"
            )
        else:
            continue
        if isinstance(where, Resource):
            yield Problem(where, need.field, message, CHECK)
        else:
            yield Problem(None, need.field, message, CHECK, file=where)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _wave(application: Resource) -> int | None:
    try:
        return int(str(application.annotations.get(SYNC_WAVE, "0")))
    except ValueError:
        return None


def _helm_values(
    path: str,
    helm: Mapping[str, Any],
    references: Mapping[str, Mapping[str, Any]],
    own_repository: str,
    read_file: Callable[[str], str | None],
) -> Iterator[tuple[str, Any]]:
    """(where, values) for each set of values a Helm source passes to its chart."""
    for value_file in helm.get("valueFiles") or []:
        reference, _, relative = str(value_file).removeprefix("$").partition("/")
        source = references.get(reference) if str(value_file).startswith("$") else None
        if source is None or normalise_repository_url(str(source.get("repoURL", ""))) != (
            own_repository
        ):
            continue  # a file of the chart's own repository: nothing of this platform's
        text = read_file(relative)
        if text is None:
            continue  # argocd-path reports it
        try:
            yield relative, yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # the YAML check reports it
    if isinstance(helm.get("valuesObject"), dict):
        yield f"{path}.helm.valuesObject", helm["valuesObject"]
    if isinstance(helm.get("values"), str):
        try:
            yield f"{path}.helm.values", yaml.safe_load(helm["values"])
        except yaml.YAMLError:
            return


def makes(resource: Resource, namespace: str) -> list[ObjectKey]:
    """The Secrets and ConfigMaps that exist once `resource` is applied (and its operator ran)."""
    body, kind, group = resource.body, resource.kind, resource.group
    spec = _mapping(body.get("spec"))
    if group == "" and kind in ("Secret", "ConfigMap"):
        return [(kind, namespace, resource.name)]
    if group == "external-secrets.io" and kind == "ExternalSecret":
        target = _mapping(spec.get("target"))
        if target.get("creationPolicy", "Owner") in ("Merge", "None"):
            return []  # Merge writes into a Secret someone else made; None makes nothing
        return [("Secret", namespace, str(target.get("name") or resource.name))]
    if group == "postgresql.cnpg.io" and kind == "Cluster":
        return [("Secret", namespace, f"{resource.name}-app")]
    if group == "cert-manager.io" and kind == "Certificate" and spec.get("secretName"):
        return [("Secret", namespace, str(spec["secretName"]))]
    if group == "networking.k8s.io" and kind == "Ingress":
        if not any(annotation in resource.annotations for annotation in _CERT_MANAGER_ANNOTATIONS):
            return []
        return [
            ("Secret", namespace, str(entry["secretName"]))
            for entry in spec.get("tls") or []
            if isinstance(entry, dict) and entry.get("secretName")
        ]
    return []


def reads(resource: Resource, namespace: str) -> Iterator[Need]:
    """The Secrets and ConfigMaps `resource` cannot work without."""
    pod = pod_spec(resource)
    if pod is not None:
        yield from _pod_reads(pod, namespace)
    spec = _mapping(resource.body.get("spec"))
    if resource.group == "networking.k8s.io" and resource.kind == "Ingress":
        auth_secret = resource.annotations.get(AUTH_SECRET_ANNOTATION)
        if auth_secret:
            secret_namespace, _, name = str(auth_secret).rpartition("/")
            yield Need(
                ("Secret", secret_namespace or namespace, name),
                f"metadata.annotations.{AUTH_SECRET_ANNOTATION}",
            )
    if resource.group == "postgresql.cnpg.io" and resource.kind == "Cluster":
        initdb = _mapping(_mapping(spec.get("bootstrap")).get("initdb"))
        for field, section in (
            ("spec.bootstrap.initdb.secret", initdb.get("secret")),
            ("spec.superuserSecret", spec.get("superuserSecret")),
        ):
            if isinstance(section, dict) and section.get("name"):
                yield Need(("Secret", namespace, str(section["name"])), f"{field}.name")


def _pod_reads(pod: PodSpec, namespace: str) -> Iterator[Need]:
    path, spec = pod.path, pod.spec

    def need(kind: str, section: Any, field: str, name_key: str = "name") -> Iterator[Need]:
        if isinstance(section, dict) and section.get(name_key):
            yield Need(
                (kind, namespace, str(section[name_key])),
                field,
                bool(section.get("optional", False)),
            )

    for index, entry in enumerate(spec.get("imagePullSecrets") or []):
        yield from need("Secret", entry, f"{path}.imagePullSecrets[{index}].name")
    for index, volume in enumerate(spec.get("volumes") or []):
        if not isinstance(volume, dict):
            continue
        where = f"{path}.volumes[{index}]"
        yield from need("Secret", volume.get("secret"), f"{where}.secret.secretName", "secretName")
        yield from need("ConfigMap", volume.get("configMap"), f"{where}.configMap.name")
        projected = _mapping(volume.get("projected"))
        for source_index, source in enumerate(projected.get("sources") or []):
            if isinstance(source, dict):
                at = f"{where}.projected.sources[{source_index}]"
                yield from need("Secret", source.get("secret"), f"{at}.secret.name")
                yield from need("ConfigMap", source.get("configMap"), f"{at}.configMap.name")
    for where, container, _is_init in containers(pod):
        for index, variable in enumerate(container.get("env") or []):
            source = variable.get("valueFrom") if isinstance(variable, dict) else None
            if isinstance(source, dict):
                at = f"{where}.env[{index}].valueFrom"
                yield from need("Secret", source.get("secretKeyRef"), f"{at}.secretKeyRef.name")
                yield from need(
                    "ConfigMap", source.get("configMapKeyRef"), f"{at}.configMapKeyRef.name"
                )
        for index, source in enumerate(container.get("envFrom") or []):
            if isinstance(source, dict):
                at = f"{where}.envFrom[{index}]"
                yield from need("Secret", source.get("secretRef"), f"{at}.secretRef.name")
                yield from need("ConfigMap", source.get("configMapRef"), f"{at}.configMapRef.name")


def chart_reads(values: Any, namespace: str, field: str = "") -> Iterator[Need]:
    """What chart values name for the chart to read: `existingSecret`-style keys anywhere, and
    the `secrets`, `configMaps` and `configSecret` of a Prometheus Operator spec (`...Spec`)."""
    if isinstance(values, list):
        for index, item in enumerate(values):
            yield from chart_reads(item, namespace, f"{field}[{index}]")
        return
    if not isinstance(values, dict):
        return
    in_operator_spec = field.rsplit(".", 1)[-1].endswith("Spec")
    for key, value in values.items():
        at = f"{field}.{key}" if field else str(key)
        if isinstance(value, str) and value:
            if _EXISTING_SECRET_KEY.match(str(key)) or (in_operator_spec and key == "configSecret"):
                yield Need(("Secret", namespace, value), at)
            elif _EXISTING_CONFIG_MAP_KEY.match(str(key)):
                yield Need(("ConfigMap", namespace, value), at)
        elif in_operator_spec and key in ("secrets", "configMaps") and isinstance(value, list):
            kind = "Secret" if key == "secrets" else "ConfigMap"
            for index, name in enumerate(value):
                if isinstance(name, str) and name:
                    yield Need((kind, namespace, name), f"{at}[{index}]")
        else:
            yield from chart_reads(value, namespace, at)

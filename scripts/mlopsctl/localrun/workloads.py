"""Rendered manifests -> what each workload asks for (`model`). Pure: dicts in, dataclasses out.

Every field is either honoured by the local run, deliberately without effect here (scheduling
hints: there is one node), or refused with `UnsupportedManifest` naming the resource and the
field. Nothing is dropped silently: a field the run ignored could be the one that breaks the
cluster.

Also the kubelet's rules that are pure: `$(VAR)` expansion, Service environment variables, the
command an image runs given its ENTRYPOINT/CMD, and resource quantities.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, cast

from mlopsctl.base.errors import UnsupportedManifest
from mlopsctl.localrun.model import (
    DEFAULT_BACKOFF_LIMIT,
    DEFAULT_PROBE_FAILURE_THRESHOLD,
    DEFAULT_PROBE_PERIOD_SECONDS,
    DEFAULT_PROBE_TIMEOUT_SECONDS,
    DEFAULT_TERMINATION_GRACE_SECONDS,
    Container,
    ContainerPort,
    EnvFrom,
    EnvVar,
    Exec,
    FieldReference,
    HttpGet,
    KeyReference,
    KeyToPath,
    ObjectReference,
    PodTemplate,
    Probe,
    ProbeAction,
    Resources,
    SecurityContext,
    Service,
    ServicePort,
    TcpSocket,
    Volume,
    VolumeMount,
    Workload,
)

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")

# Fields with no effect on how the software behaves on a single node: accepted, not honoured.
_SCHEDULING_FIELDS = frozenset(
    {
        "affinity",
        "nodeSelector",
        "tolerations",
        "topologySpreadConstraints",
        "priorityClassName",
        "priority",
        "schedulerName",
        "nodeName",
        "preemptionPolicy",
    }
)
_POD_FIELDS = frozenset(
    {
        "containers",
        "initContainers",
        "volumes",
        "restartPolicy",
        "terminationGracePeriodSeconds",
        "securityContext",
        "serviceAccountName",
        "serviceAccount",
        "automountServiceAccountToken",
        "enableServiceLinks",
        "dnsPolicy",
        "imagePullSecrets",
    }
    | _SCHEDULING_FIELDS
)
# imagePullPolicy and terminationMessage*: nothing is pulled here, and messages are not kept.
_CONTAINER_FIELDS = frozenset(
    {
        "name",
        "image",
        "imagePullPolicy",
        "command",
        "args",
        "env",
        "envFrom",
        "workingDir",
        "ports",
        "startupProbe",
        "readinessProbe",
        "livenessProbe",
        "resources",
        "securityContext",
        "volumeMounts",
        "terminationMessagePath",
        "terminationMessagePolicy",
    }
)
_PROBE_FIELDS = frozenset(
    {
        "httpGet",
        "tcpSocket",
        "exec",
        "initialDelaySeconds",
        "periodSeconds",
        "timeoutSeconds",
        "successThreshold",
        "failureThreshold",
    }
)
_CONTAINER_SECURITY_FIELDS = frozenset(
    {
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "readOnlyRootFilesystem",
        "allowPrivilegeEscalation",
        "capabilities",
        "seccompProfile",
        "privileged",
    }
)
_POD_SECURITY_FIELDS = frozenset(
    {
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "fsGroup",
        "fsGroupChangePolicy",
        "supplementalGroups",
        "seccompProfile",
    }
)

_CPU = re.compile(r"^(?P<number>[0-9]+(\.[0-9]+)?)(?P<unit>m?)$")
_MEMORY = re.compile(
    r"^(?P<number>[0-9]+(\.[0-9]+)?([eE][0-9]+)?)(?P<unit>Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$"
)
_MEMORY_UNITS: dict[str | None, int | Decimal] = {
    None: 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def cpu_millis(value: Any, resource: object, field: str) -> int:
    """A CPU quantity ("250m", "1", 0.5) in millicores."""
    match = _CPU.match(str(value).strip())
    if match is None:
        raise UnsupportedManifest(resource, field, f"{value!r} is not a CPU quantity")
    number = Decimal(match["number"])
    millis = number if match["unit"] else number * 1000
    return max(1, int(millis.to_integral_value(rounding="ROUND_CEILING")))


def memory_bytes(value: Any, resource: object, field: str) -> int:
    """A memory quantity ("512Mi", "1G", 1073741824) in bytes."""
    match = _MEMORY.match(str(value).strip())
    if match is None:
        raise UnsupportedManifest(resource, field, f"{value!r} is not a memory quantity")
    try:
        number = Decimal(match["number"])
    except InvalidOperation:
        raise UnsupportedManifest(resource, field, f"{value!r} is not a number") from None
    return int(number * Decimal(_MEMORY_UNITS[match["unit"]]))


# -- the kubelet's string rules ----------------------------------------------------------------


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """`$(VAR)` expansion as the kubelet does it (k8s third_party/forked/golang/expansion).

    A defined VAR is replaced; an undefined one stays `$(VAR)` as written; `$$` is one `$`; a
    `$` before anything else stays.
    """
    output: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            output.append(text[checkpoint:cursor])
            following = text[cursor + 1 :]
            if following[0] == "$":
                output.append("$")
                advance = 1
            elif following[0] == "(":
                closing = following.find(")", 1)
                if closing == -1:
                    output.append("$" + following)
                    advance = len(following)
                else:
                    name = following[1:closing]
                    value = lookup(name)
                    output.append(value if value is not None else f"$({name})")
                    advance = closing + 1
            else:
                output.append("$" + following[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    output.append(text[checkpoint:])
    return "".join(output)


def service_environment(services: Iterable[tuple[Service, str]]) -> dict[str, str]:
    """The variables the kubelet gives a pod for each Service of its namespace
    (`enableServiceLinks`), from (Service, cluster IP) pairs; headless Services give none."""
    variables: dict[str, str] = {}
    for service, cluster_ip in services:
        if service.headless or not service.ports:
            continue
        prefix = service.reference.name.upper().replace("-", "_")
        first = service.ports[0]
        variables[f"{prefix}_SERVICE_HOST"] = cluster_ip
        variables[f"{prefix}_SERVICE_PORT"] = str(first.port)
        for port in service.ports:
            if port.name:
                port_name = port.name.upper().replace("-", "_")
                variables[f"{prefix}_SERVICE_PORT_{port_name}"] = str(port.port)
        protocol = first.protocol.lower()
        variables[f"{prefix}_PORT"] = f"{protocol}://{cluster_ip}:{first.port}"
        for port in service.ports:
            key = f"{prefix}_PORT_{port.port}_{port.protocol.upper()}"
            variables[key] = f"{port.protocol.lower()}://{cluster_ip}:{port.port}"
            variables[f"{key}_PROTO"] = port.protocol.lower()
            variables[f"{key}_PORT"] = str(port.port)
            variables[f"{key}_ADDR"] = cluster_ip
    return variables


def effective_command(
    container: Container,
    entrypoint: Sequence[str] | None,
    cmd: Sequence[str] | None,
) -> list[str]:
    """What runs, by Kubernetes' rules: `command` replaces ENTRYPOINT (and drops CMD); `args`
    replaces CMD."""
    if container.command is not None:
        return [*container.command, *(container.args or ())]
    if container.args is not None:
        return [*(entrypoint or ()), *container.args]
    return [*(entrypoint or ()), *(cmd or ())]


# -- manifests -> model --------------------------------------------------------------------------


def reference_of(body: Mapping[str, Any], default_namespace: str = "") -> ObjectReference:
    metadata = body.get("metadata") or {}
    return ObjectReference(
        str(body.get("kind", "")),
        str(metadata.get("namespace") or default_namespace),
        str(metadata.get("name", "")),
    )


def mapping_at(value: Any, resource: object, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnsupportedManifest(resource, field, f"expected a mapping, found {value!r}")
    return value


def list_at(value: Any, resource: object, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UnsupportedManifest(resource, field, f"expected a list, found {value!r}")
    return value


def _refuse_unknown(
    section: Mapping[str, Any], known: frozenset[str], resource: object, field: str
) -> None:
    for key in section:
        if key not in known:
            path = f"{field}.{key}" if field else key
            raise UnsupportedManifest(resource, path, "not supported by the local run")


def _number(value: Any, resource: object, field: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsupportedManifest(resource, field, f"expected a number, found {value!r}")
    return float(value)


def _strings(value: Any, resource: object, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = list_at(value, resource, field)
    if not all(isinstance(item, str) for item in items):
        raise UnsupportedManifest(resource, field, "every item must be a string")
    return tuple(items)


def _port_value(
    value: Any, container_ports: Sequence[ContainerPort], resource: object, field: str
) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        for port in container_ports:
            if port.name == value:
                return port.number
        raise UnsupportedManifest(
            resource, field, f"port {value!r} is not the name of a port of this container"
        )
    raise UnsupportedManifest(resource, field, f"{value!r} is not a port")


def _probe(raw: Any, ports: Sequence[ContainerPort], resource: object, field: str) -> Probe | None:
    if raw is None:
        return None
    section = mapping_at(raw, resource, field)
    _refuse_unknown(section, _PROBE_FIELDS, resource, field)
    action: ProbeAction
    kinds = [name for name in ("httpGet", "tcpSocket", "exec") if name in section]
    if len(kinds) != 1:
        raise UnsupportedManifest(resource, field, "needs exactly one of httpGet, tcpSocket, exec")
    if "httpGet" in section:
        http = mapping_at(section["httpGet"], resource, f"{field}.httpGet")
        _refuse_unknown(
            http, frozenset({"path", "port", "scheme", "httpHeaders"}), resource, f"{field}.httpGet"
        )
        headers = tuple(
            (str(header.get("name", "")), str(header.get("value", "")))
            for header in list_at(http.get("httpHeaders"), resource, f"{field}.httpGet.httpHeaders")
        )
        scheme = str(http.get("scheme", "HTTP")).upper()
        if scheme not in ("HTTP", "HTTPS"):
            raise UnsupportedManifest(
                resource, f"{field}.httpGet.scheme", f"{scheme!r} is not HTTP or HTTPS"
            )
        action = HttpGet(
            path=str(http.get("path", "/")),
            port=_port_value(http.get("port"), ports, resource, f"{field}.httpGet.port"),
            scheme=scheme,
            headers=headers,
        )
    elif "tcpSocket" in section:
        tcp = mapping_at(section["tcpSocket"], resource, f"{field}.tcpSocket")
        _refuse_unknown(tcp, frozenset({"port"}), resource, f"{field}.tcpSocket")
        action = TcpSocket(_port_value(tcp.get("port"), ports, resource, f"{field}.tcpSocket.port"))
    else:
        command = _strings(
            mapping_at(section["exec"], resource, f"{field}.exec").get("command"),
            resource,
            f"{field}.exec.command",
        )
        if not command:
            raise UnsupportedManifest(resource, f"{field}.exec.command", "is empty")
        action = Exec(command)
    return Probe(
        action=action,
        initial_delay_seconds=_number(
            section.get("initialDelaySeconds"), resource, f"{field}.initialDelaySeconds", 0.0
        ),
        period_seconds=_number(
            section.get("periodSeconds"),
            resource,
            f"{field}.periodSeconds",
            DEFAULT_PROBE_PERIOD_SECONDS,
        ),
        timeout_seconds=_number(
            section.get("timeoutSeconds"),
            resource,
            f"{field}.timeoutSeconds",
            DEFAULT_PROBE_TIMEOUT_SECONDS,
        ),
        success_threshold=int(
            _number(section.get("successThreshold"), resource, f"{field}.successThreshold", 1)
        ),
        failure_threshold=int(
            _number(
                section.get("failureThreshold"),
                resource,
                f"{field}.failureThreshold",
                DEFAULT_PROBE_FAILURE_THRESHOLD,
            )
        ),
    )


def _resources(raw: Any, resource: object, field: str) -> Resources:
    section = mapping_at(raw, resource, field)
    _refuse_unknown(section, frozenset({"requests", "limits"}), resource, field)
    requests = mapping_at(section.get("requests"), resource, f"{field}.requests")
    limits = mapping_at(section.get("limits"), resource, f"{field}.limits")
    for name, values in (("requests", requests), ("limits", limits)):
        _refuse_unknown(
            values, frozenset({"cpu", "memory", "ephemeral-storage"}), resource, f"{field}.{name}"
        )

    def cpu(values: dict[str, Any], name: str) -> int | None:
        return (
            None
            if "cpu" not in values
            else cpu_millis(values["cpu"], resource, f"{field}.{name}.cpu")
        )

    def memory(values: dict[str, Any], name: str) -> int | None:
        if "memory" not in values:
            return None
        return memory_bytes(values["memory"], resource, f"{field}.{name}.memory")

    cpu_limit, memory_limit = cpu(limits, "limits"), memory(limits, "limits")
    for name, request, limit in (
        ("cpu", cpu(requests, "requests"), cpu_limit),
        ("memory", memory(requests, "requests"), memory_limit),
    ):
        if request is not None and limit is not None and request > limit:
            raise UnsupportedManifest(
                resource,
                f"{field}.requests.{name}",
                f"{requests[name]} is more than the limit {limits[name]}: "
                "the API server refuses it",
            )
    # As the API server defaults them: a limit with no request requests the limit.
    return Resources(
        cpu_request_millis=cpu(requests, "requests") if "cpu" in requests else cpu_limit,
        cpu_limit_millis=cpu_limit,
        memory_request_bytes=memory(requests, "requests") if "memory" in requests else memory_limit,
        memory_limit_bytes=memory_limit,
    )


def _security(
    container_raw: Any, pod: Mapping[str, Any], resource: object, field: str
) -> SecurityContext:
    container = mapping_at(container_raw, resource, field)
    _refuse_unknown(container, _CONTAINER_SECURITY_FIELDS, resource, field)
    if container.get("privileged"):
        raise UnsupportedManifest(
            resource,
            f"{field}.privileged",
            "privileged containers are not supported by the local run",
        )
    capabilities = mapping_at(container.get("capabilities"), resource, f"{field}.capabilities")
    _refuse_unknown(capabilities, frozenset({"drop", "add"}), resource, f"{field}.capabilities")
    if capabilities.get("add"):
        raise UnsupportedManifest(
            resource,
            f"{field}.capabilities.add",
            "adding capabilities is not supported by the local run",
        )
    dropped = [
        str(item)
        for item in list_at(capabilities.get("drop"), resource, f"{field}.capabilities.drop")
    ]

    def pick(key: str) -> Any:
        return container.get(key, pod.get(key))

    def optional_id(key: str) -> int | None:
        value = pick(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UnsupportedManifest(
                resource, f"{field}.{key}", f"{value!r} is not a user or group id"
            )
        return value

    groups = list_at(
        pod.get("supplementalGroups"), resource, "spec.securityContext.supplementalGroups"
    )
    fs_group = pod.get("fsGroup")
    return SecurityContext(
        run_as_user=optional_id("runAsUser"),
        run_as_group=optional_id("runAsGroup"),
        run_as_non_root=bool(pick("runAsNonRoot")),
        read_only_root_filesystem=bool(container.get("readOnlyRootFilesystem", False)),
        allow_privilege_escalation=bool(container.get("allowPrivilegeEscalation", True)),
        drop_all_capabilities="ALL" in dropped,
        fs_group=int(fs_group) if isinstance(fs_group, int) else None,
        supplemental_groups=tuple(int(group) for group in groups),
    )


def _key_reference(
    raw: Any, kind: Literal["ConfigMap", "Secret"], resource: object, field: str
) -> KeyReference:
    section = mapping_at(raw, resource, field)
    _refuse_unknown(section, frozenset({"name", "key", "optional"}), resource, field)
    if not section.get("name") or not section.get("key"):
        raise UnsupportedManifest(resource, field, "needs a name and a key")
    return KeyReference(
        kind, str(section["name"]), str(section["key"]), bool(section.get("optional", False))
    )


_FIELD_PATHS = re.compile(
    r"^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['[^']+'\]|spec\.nodeName"
    r"|spec\.serviceAccountName|status\.(hostIP|hostIPs|podIP|podIPs))$"
)


def _env(raw: Any, resource: object, field: str) -> tuple[EnvVar, ...]:
    variables: list[EnvVar] = []
    for index, item in enumerate(list_at(raw, resource, field)):
        where = f"{field}[{index}]"
        entry = mapping_at(item, resource, where)
        _refuse_unknown(entry, frozenset({"name", "value", "valueFrom"}), resource, where)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise UnsupportedManifest(resource, f"{where}.name", "every variable needs a name")
        if "valueFrom" not in entry:
            value = entry.get("value", "")
            variables.append(EnvVar(name, str(value) if value is not None else ""))
            continue
        source = mapping_at(entry["valueFrom"], resource, f"{where}.valueFrom")
        if len(source) != 1:
            raise UnsupportedManifest(resource, f"{where}.valueFrom", "needs exactly one source")
        ((kind, reference),) = source.items()
        if kind == "configMapKeyRef":
            variables.append(
                EnvVar(
                    name,
                    reference=_key_reference(
                        reference, "ConfigMap", resource, f"{where}.valueFrom.{kind}"
                    ),
                )
            )
        elif kind == "secretKeyRef":
            variables.append(
                EnvVar(
                    name,
                    reference=_key_reference(
                        reference, "Secret", resource, f"{where}.valueFrom.{kind}"
                    ),
                )
            )
        elif kind == "fieldRef":
            path = str(
                mapping_at(reference, resource, f"{where}.valueFrom.fieldRef").get("fieldPath", "")
            )
            if not _FIELD_PATHS.match(path):
                raise UnsupportedManifest(
                    resource,
                    f"{where}.valueFrom.fieldRef.fieldPath",
                    f"{path!r} is not supported by the local run",
                )
            variables.append(EnvVar(name, reference=FieldReference(path)))
        else:
            raise UnsupportedManifest(
                resource, f"{where}.valueFrom.{kind}", "not supported by the local run"
            )
    return tuple(variables)


def _env_from(raw: Any, resource: object, field: str) -> tuple[EnvFrom, ...]:
    sources: list[EnvFrom] = []
    for index, item in enumerate(list_at(raw, resource, field)):
        where = f"{field}[{index}]"
        entry = mapping_at(item, resource, where)
        _refuse_unknown(entry, frozenset({"configMapRef", "secretRef", "prefix"}), resource, where)
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if key in entry:
                reference = mapping_at(entry[key], resource, f"{where}.{key}")
                sources.append(
                    EnvFrom(
                        cast(Literal["ConfigMap", "Secret"], kind),
                        str(reference.get("name", "")),
                        str(entry.get("prefix", "")),
                        bool(reference.get("optional", False)),
                    )
                )
    return tuple(sources)


def _container(
    raw: Any, pod: Mapping[str, Any], volumes: Mapping[str, Volume], resource: object, field: str
) -> Container:
    section = mapping_at(raw, resource, field)
    _refuse_unknown(section, _CONTAINER_FIELDS, resource, field)
    name = section.get("name")
    image = section.get("image")
    if not isinstance(name, str) or not name:
        raise UnsupportedManifest(resource, f"{field}.name", "every container needs a name")
    if not isinstance(image, str) or not image:
        raise UnsupportedManifest(resource, f"{field}.image", "every container needs an image")
    ports: list[ContainerPort] = []
    for index, port in enumerate(list_at(section.get("ports"), resource, f"{field}.ports")):
        entry = mapping_at(port, resource, f"{field}.ports[{index}]")
        number = entry.get("containerPort")
        if not isinstance(number, int) or not 0 < number < 65536:
            raise UnsupportedManifest(
                resource, f"{field}.ports[{index}].containerPort", f"{number!r} is not a port"
            )
        if entry.get("hostPort"):
            raise UnsupportedManifest(
                resource, f"{field}.ports[{index}].hostPort", "not supported by the local run"
            )
        ports.append(ContainerPort(entry.get("name"), number, str(entry.get("protocol", "TCP"))))
    mounts: list[VolumeMount] = []
    for index, mount in enumerate(
        list_at(section.get("volumeMounts"), resource, f"{field}.volumeMounts")
    ):
        where = f"{field}.volumeMounts[{index}]"
        entry = mapping_at(mount, resource, where)
        _refuse_unknown(
            entry, frozenset({"name", "mountPath", "readOnly", "subPath"}), resource, where
        )
        volume_name = str(entry.get("name", ""))
        if volume_name not in volumes:
            raise UnsupportedManifest(
                resource, f"{where}.name", f"no volume named {volume_name!r} in the pod"
            )
        path = str(entry.get("mountPath", ""))
        if not path.startswith("/"):
            raise UnsupportedManifest(
                resource, f"{where}.mountPath", f"{path!r} is not an absolute path"
            )
        mounts.append(
            VolumeMount(volume_name, path, bool(entry.get("readOnly", False)), entry.get("subPath"))
        )
    return Container(
        name=name,
        image=image,
        command=_strings(section.get("command"), resource, f"{field}.command"),
        args=_strings(section.get("args"), resource, f"{field}.args"),
        env=_env(section.get("env"), resource, f"{field}.env"),
        env_from=_env_from(section.get("envFrom"), resource, f"{field}.envFrom"),
        working_dir=section.get("workingDir"),
        ports=tuple(ports),
        startup_probe=_probe(section.get("startupProbe"), ports, resource, f"{field}.startupProbe"),
        readiness_probe=_probe(
            section.get("readinessProbe"), ports, resource, f"{field}.readinessProbe"
        ),
        liveness_probe=_probe(
            section.get("livenessProbe"), ports, resource, f"{field}.livenessProbe"
        ),
        resources=_resources(section.get("resources"), resource, f"{field}.resources"),
        security=_security(
            section.get("securityContext"), pod, resource, f"{field}.securityContext"
        ),
        mounts=tuple(mounts),
    )


def _volume(raw: Any, resource: object, field: str) -> Volume:
    section = mapping_at(raw, resource, field)
    name = str(section.get("name", ""))
    kinds = [key for key in section if key != "name"]
    if len(kinds) != 1:
        raise UnsupportedManifest(resource, field, "a volume needs exactly one source")
    kind = kinds[0]
    source = mapping_at(section[kind], resource, f"{field}.{kind}")
    where = f"{field}.{kind}"
    if kind == "emptyDir":
        _refuse_unknown(source, frozenset({"sizeLimit", "medium"}), resource, where)
        limit = source.get("sizeLimit")
        medium = source.get("medium", "")
        if medium not in ("", "Memory"):
            raise UnsupportedManifest(
                resource, f"{where}.medium", f"{medium!r} is not supported by the local run"
            )
        return Volume(
            name,
            "emptyDir",
            size_limit_bytes=None
            if limit is None
            else memory_bytes(limit, resource, f"{where}.sizeLimit"),
            memory_medium=medium == "Memory",
        )
    if kind == "persistentVolumeClaim":
        _refuse_unknown(source, frozenset({"claimName", "readOnly"}), resource, where)
        return Volume(
            name,
            "persistentVolumeClaim",
            source=str(source.get("claimName", "")),
            read_only=bool(source.get("readOnly", False)),
        )
    if kind in ("configMap", "secret"):
        name_key = "name" if kind == "configMap" else "secretName"
        _refuse_unknown(
            source, frozenset({name_key, "items", "defaultMode", "optional"}), resource, where
        )
        items = tuple(
            KeyToPath(str(item.get("key", "")), str(item.get("path", "")), item.get("mode"))
            for item in list_at(source.get("items"), resource, f"{where}.items")
        )
        return Volume(
            name,
            cast(Literal["configMap", "secret"], kind),
            source=str(source.get(name_key, "")),
            items=items,
            default_mode=int(source.get("defaultMode", 0o644)),
            optional=bool(source.get("optional", False)),
        )
    raise UnsupportedManifest(resource, where, f"{kind} volumes are not supported by the local run")


def pod_template(
    template: Mapping[str, Any], resource: object, field: str = "spec.template"
) -> PodTemplate:
    """A pod template (`spec.template` of a workload) as the local run will run it."""
    metadata = mapping_at(template.get("metadata"), resource, f"{field}.metadata")
    spec = mapping_at(template.get("spec"), resource, f"{field}.spec")
    _refuse_unknown(spec, _POD_FIELDS, resource, f"{field}.spec")
    if spec.get("dnsPolicy", "ClusterFirst") != "ClusterFirst":
        raise UnsupportedManifest(
            resource, f"{field}.spec.dnsPolicy", "only ClusterFirst is supported by the local run"
        )
    pod_security = mapping_at(
        spec.get("securityContext"), resource, f"{field}.spec.securityContext"
    )
    _refuse_unknown(pod_security, _POD_SECURITY_FIELDS, resource, f"{field}.spec.securityContext")
    volumes = {
        volume.name: volume
        for volume in (
            _volume(raw, resource, f"{field}.spec.volumes[{index}]")
            for index, raw in enumerate(
                list_at(spec.get("volumes"), resource, f"{field}.spec.volumes")
            )
        )
    }
    containers = tuple(
        _container(raw, pod_security, volumes, resource, f"{field}.spec.containers[{index}]")
        for index, raw in enumerate(
            list_at(spec.get("containers"), resource, f"{field}.spec.containers")
        )
    )
    if not containers:
        raise UnsupportedManifest(resource, f"{field}.spec.containers", "a pod needs a container")
    init_containers = tuple(
        _container(raw, pod_security, volumes, resource, f"{field}.spec.initContainers[{index}]")
        for index, raw in enumerate(
            list_at(spec.get("initContainers"), resource, f"{field}.spec.initContainers")
        )
    )
    restart_policy = spec.get("restartPolicy", "Always")
    if restart_policy not in ("Always", "OnFailure", "Never"):
        raise UnsupportedManifest(
            resource, f"{field}.spec.restartPolicy", f"{restart_policy!r} is not a restart policy"
        )
    labels = mapping_at(metadata.get("labels"), resource, f"{field}.metadata.labels")
    annotations = mapping_at(metadata.get("annotations"), resource, f"{field}.metadata.annotations")
    return PodTemplate(
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        annotations=tuple(sorted((str(k), str(v)) for k, v in annotations.items())),
        containers=containers,
        init_containers=init_containers,
        volumes=tuple(volumes.values()),
        restart_policy=restart_policy,
        termination_grace_seconds=_number(
            spec.get("terminationGracePeriodSeconds"),
            resource,
            f"{field}.spec.terminationGracePeriodSeconds",
            DEFAULT_TERMINATION_GRACE_SECONDS,
        ),
        enable_service_links=bool(spec.get("enableServiceLinks", True)),
        service_account=str(
            spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        ),
    )


def workload(body: Mapping[str, Any]) -> Workload:
    """A Deployment, StatefulSet or Job from its rendered body."""
    resource = reference_of(body)
    spec = mapping_at(body.get("spec"), resource, "spec")
    template = mapping_at(spec.get("template"), resource, "spec.template")
    pod = pod_template(template, resource)
    annotations = mapping_at(
        (body.get("metadata") or {}).get("annotations"), resource, "metadata.annotations"
    )
    hook = annotations.get("argocd.argoproj.io/hook")
    selector = mapping_at(spec.get("selector"), resource, "spec.selector")
    if resource.kind != "Job":
        _check_selector(selector, pod, resource)
    if resource.kind == "Job":
        if pod.restart_policy == "Always":
            raise UnsupportedManifest(
                resource,
                "spec.template.spec.restartPolicy",
                "a Job's pods must use Never or OnFailure",
            )
        deadline = spec.get("activeDeadlineSeconds")
        return Workload(
            resource,
            pod,
            replicas=1,
            hook=str(hook) if hook else None,
            backoff_limit=int(
                _number(
                    spec.get("backoffLimit"), resource, "spec.backoffLimit", DEFAULT_BACKOFF_LIMIT
                )
            ),
            active_deadline_seconds=None
            if deadline is None
            else _number(deadline, resource, "spec.activeDeadlineSeconds", 0),
        )
    replicas = int(_number(spec.get("replicas"), resource, "spec.replicas", 1))
    strategy = mapping_at(spec.get("strategy"), resource, "spec.strategy").get(
        "type", "RollingUpdate"
    )
    if strategy not in ("RollingUpdate", "Recreate"):
        raise UnsupportedManifest(resource, "spec.strategy.type", f"{strategy!r} is not a strategy")
    return Workload(
        resource, pod, replicas=replicas, strategy=strategy, hook=str(hook) if hook else None
    )


def _check_selector(selector: Mapping[str, Any], pod: PodTemplate, resource: object) -> None:
    # The API server refuses a selector that does not select its own template: so do we.
    _refuse_unknown(selector, frozenset({"matchLabels"}), resource, "spec.selector")
    labels = pod.label_map
    for key, value in mapping_at(
        selector.get("matchLabels"), resource, "spec.selector.matchLabels"
    ).items():
        if labels.get(key) != str(value):
            raise UnsupportedManifest(
                resource,
                "spec.selector.matchLabels",
                f"{key}={value} does not select the pod template",
            )


def service(body: Mapping[str, Any]) -> Service:
    """A Service from its rendered body (ClusterIP or headless; other types are refused)."""
    resource = reference_of(body)
    spec = mapping_at(body.get("spec"), resource, "spec")
    kind = spec.get("type", "ClusterIP")
    if kind != "ClusterIP":
        raise UnsupportedManifest(
            resource, "spec.type", f"{kind} Services are not supported by the local run"
        )
    ports: list[ServicePort] = []
    for index, raw in enumerate(list_at(spec.get("ports"), resource, "spec.ports")):
        entry = mapping_at(raw, resource, f"spec.ports[{index}]")
        number = entry.get("port")
        if not isinstance(number, int):
            raise UnsupportedManifest(
                resource, f"spec.ports[{index}].port", f"{number!r} is not a port"
            )
        target = entry.get("targetPort", number)
        ports.append(
            ServicePort(
                entry.get("name"),
                number,
                int(target) if isinstance(target, int) or str(target).isdigit() else str(target),
                str(entry.get("protocol", "TCP")),
            )
        )
    selector = mapping_at(spec.get("selector"), resource, "spec.selector")
    labels = mapping_at((body.get("metadata") or {}).get("labels"), resource, "metadata.labels")
    return Service(
        resource,
        tuple(sorted((str(k), str(v)) for k, v in selector.items())),
        tuple(ports),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        headless=spec.get("clusterIP") == "None",
    )


@dataclass(frozen=True)
class ObjectUse:
    """A ConfigMap, Secret or claim a pod template needs, and the field that names it."""

    kind: Literal["ConfigMap", "Secret", "PersistentVolumeClaim"]
    name: str
    field: str
    optional: bool


def object_uses(template: PodTemplate, prefix: str = "spec.template.spec") -> list[ObjectUse]:
    """Every object the pods of `template` read, with where: env and envFrom references and
    volumes (what the kubelet waits for, as CreateContainerConfigError, when it is missing)."""
    uses: list[ObjectUse] = []
    for volume in template.volumes:
        field = f"{prefix}.volumes[{volume.name}]"
        if volume.kind == "configMap":
            uses.append(
                ObjectUse("ConfigMap", volume.source, f"{field}.configMap", volume.optional)
            )
        elif volume.kind == "secret":
            uses.append(ObjectUse("Secret", volume.source, f"{field}.secret", volume.optional))
        elif volume.kind == "persistentVolumeClaim":
            uses.append(
                ObjectUse(
                    "PersistentVolumeClaim", volume.source, f"{field}.persistentVolumeClaim", False
                )
            )
    for group, containers in (
        ("initContainers", template.init_containers),
        ("containers", template.containers),
    ):
        for container in containers:
            where = f"{prefix}.{group}[{container.name}]"
            for variable in container.env:
                reference = variable.reference
                if isinstance(reference, KeyReference):
                    key = "configMapKeyRef" if reference.kind == "ConfigMap" else "secretKeyRef"
                    uses.append(
                        ObjectUse(
                            reference.kind,
                            reference.name,
                            f"{where}.env[{variable.name}].valueFrom.{key}",
                            reference.optional,
                        )
                    )
            for source in container.env_from:
                key = "configMapRef" if source.kind == "ConfigMap" else "secretRef"
                uses.append(
                    ObjectUse(source.kind, source.name, f"{where}.envFrom.{key}", source.optional)
                )
    return uses


def check_object_uses(
    rendered: Iterable[tuple[str, Mapping[str, Any]]],
    created_outside: Callable[[dict[str, Any]], list[tuple[str, str, str]]],
    created_by_hand: Iterable[tuple[str, str, str]],
    environment: str,
) -> None:
    """Every ConfigMap, Secret and claim a workload of the environment needs is made by
    something: a manifest of the environment, an operator (`created_outside` says what it makes
    of an object), or a person (`created_by_hand`). Otherwise a pod would wait forever on a
    cluster: refused here, naming the workload and the field. `rendered` holds (destination
    namespace, body) for every object the environment's Applications render."""
    created = set(created_by_hand)
    uses: list[tuple[ObjectReference, ObjectUse]] = []
    for namespace, body in rendered:
        reference = reference_of(body, namespace)
        if reference.kind in ("ConfigMap", "Secret", "PersistentVolumeClaim"):
            created.add((reference.kind, reference.namespace, reference.name))
        metadata = {**(body.get("metadata") or {}), "namespace": reference.namespace}
        created.update(created_outside({**body, "metadata": metadata}))
        if reference.kind in WORKLOAD_KINDS:
            template = workload(body).template
            uses.extend((reference, use) for use in object_uses(template))
    for reference, use in uses:
        if not use.optional and (use.kind, reference.namespace, use.name) not in created:
            raise UnsupportedManifest(
                reference,
                use.field,
                f"{use.kind} {use.name!r} is created by nothing in environment {environment!r}: "
                "no manifest, no operator, and no `secretsCreatedByHand` entry in mlopsctl.yaml "
                "makes it",
            )

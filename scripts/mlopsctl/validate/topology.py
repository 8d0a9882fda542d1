"""One writer per pin: which promoter writes each environment's pins, and which registry every
MLflow client of an environment talks to. Pure: rendered resources and the config in, problems out.

Two promoters writing one environment's pins undo each other's commits (v1 -> v2 -> v5 -> v2) and
force-push each other's pull-request branches; a promoter or a model server talking to another
registry than the environment follows writes or serves versions numbered by that other registry.
Where each rendered workload runs comes from Argo CD: `clusters/<cluster>` bootstraps a cluster,
its Applications deploy `apps/<env>`, whose Applications deploy `overlays/<env>/<component>`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from mlopsctl.base.argocd import IN_CLUSTER, application_sources, normalise_repository_url
from mlopsctl.base.config import CONFIG_FILENAME, Config, Registry
from mlopsctl.base.resources import Resource
from mlopsctl.validate.findings import Problem, RootState
from mlopsctl.validate.policies import containers, pod_spec

CHECK = "one-writer-per-pin"
OWNED_ENVIRONMENTS = "MLOPSCTL_ENVIRONMENTS"
TRACKING_URI = "MLFLOW_TRACKING_URI"
_CLUSTER_DOMAIN = "svc.cluster.local"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Client:
    """One container that talks to MLflow, where it runs and what it says about it."""

    resource: Resource
    cluster: str
    tracking_uri: str | None
    tracking_uri_field: str
    # Set for a promoter (`mlopsctl serve`): the environments it owns and the field naming them.
    owned: tuple[str, ...] | None = None
    owned_field: str = ""

    def describe(self) -> str:
        return f"{self.resource.reference} in cluster {self.cluster} ({self.resource.root})"


def clusters_of_roots(
    roots: Mapping[str, RootState], repository_url: str
) -> dict[str, frozenset[str]]:
    """The clusters each root is deployed to, following Applications from `clusters/<cluster>`.

    A root no Application reaches (a base, a component, a fixture) runs nowhere, and so writes
    nothing and reads nothing.
    """
    own = normalise_repository_url(repository_url)
    placed: dict[str, set[str]] = defaultdict(set)
    pending: list[tuple[str, str]] = []
    for root in roots:
        parts = PurePosixPath(root).parts
        if len(parts) == 2 and parts[0] == "clusters":
            placed[root].add(parts[1])
            pending.append((root, parts[1]))
    while pending:
        root, cluster = pending.pop()
        state = roots.get(root)
        for resource in state.resources if state is not None else ():
            if resource.kind != "Application" or resource.group != "argoproj.io":
                continue
            target = _destination_cluster(resource, cluster)
            for _path, source in application_sources(resource):
                if "path" not in source:
                    continue
                if normalise_repository_url(str(source.get("repoURL", ""))) != own:
                    continue
                path = str(source["path"]).strip("/")
                if target not in placed[path]:
                    placed[path].add(target)
                    pending.append((path, target))
    return {root: frozenset(clusters) for root, clusters in placed.items()}


def _destination_cluster(application: Resource, argocd_cluster: str) -> str:
    """Argo CD's own cluster for an in-cluster destination, else the destination as written."""
    destination = (application.body.get("spec") or {}).get("destination") or {}
    server = str(destination.get("server", ""))
    name = str(destination.get("name", ""))
    if server == IN_CLUSTER or name == "in-cluster" or not (server or name):
        return argocd_cluster
    return name or server


def canonical_url(url: str, namespace: str = "") -> str:
    """A tracking URI as every client resolves it: `mlflow-tracking:5000` from a pod in
    namespace ml-platform is `mlflow-tracking.ml-platform.svc.cluster.local:5000`."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if "." not in host and namespace and host != "localhost":
        host = f"{host}.{namespace}.{_CLUSTER_DOMAIN}"
    elif host.endswith(".svc"):
        host = f"{host}.cluster.local"
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


def is_cluster_internal(url: str) -> bool:
    """Whether a URL names a Service, which reaches one thing in each cluster that resolves it."""
    host = urlsplit(canonical_url(url)).hostname or ""
    return host.endswith(f".{_CLUSTER_DOMAIN}") or "." not in host


def talks_to(client_url: str, namespace: str, cluster: str, registry: Registry) -> bool:
    if canonical_url(client_url, namespace) != canonical_url(registry.url):
        return False
    # The same Service name reaches another MLflow in every cluster.
    return not is_cluster_internal(registry.url) or cluster == registry.cluster


def describe_registry(registry: Registry) -> str:
    where = f"in cluster {registry.cluster}" if registry.cluster else "outside the clusters"
    return f"registry {registry.name!r} ({registry.url}, {where})"


def check_topology(roots: Mapping[str, RootState], config: Config) -> Iterator[Problem]:
    placed = clusters_of_roots(roots, config.repository_url)
    if not placed:
        return  # nothing is deployed through Argo CD: nothing runs, so nothing writes
    yield from _check_registries(roots, placed, config)
    clients = [
        client
        for root, clusters in sorted(placed.items())
        if root in roots
        for cluster in sorted(clusters)
        for client in _clients(roots[root], cluster)
    ]
    promoters = [client for client in clients if client.owned is not None]
    writers: dict[str, list[Client]] = defaultdict(list)
    for promoter in promoters:
        yield from _check_promoter(promoter, config)
        for environment in promoter.owned or ():
            if environment in config.environments:
                writers[environment].append(promoter)
    for environment, owners in sorted(writers.items()):
        if len(owners) < 2:
            continue
        for owner in owners:
            others = "; ".join(other.describe() for other in owners if other is not owner)
            yield Problem(
                owner.resource,
                owner.owned_field,
                f"{OWNED_ENVIRONMENTS} names {environment}, which the promoter {others} "
                "owns too: one writer per pin, or their commits undo each other",
                CHECK,
            )
    for policy in config.promotion.environments:
        if policy.writer == "promoter" and policy.environment not in writers:
            yield Problem(
                None,
                f"promotion.environments.{policy.environment}",
                f"no promoter owns {policy.environment}, so nothing writes its pins: name it in "
                f"{OWNED_ENVIRONMENTS} of the promoter in its registry's cluster, or set "
                f"`writer: cli` if `mlopsctl promote --env {policy.environment}` is its writer",
                CHECK,
                file=CONFIG_FILENAME,
            )
    for client in clients:
        if client.owned is None:
            yield from _check_environment_client(client, config)


def _check_registries(
    roots: Mapping[str, RootState], placed: Mapping[str, frozenset[str]], config: Config
) -> Iterator[Problem]:
    clusters = {
        PurePosixPath(root).parts[1]
        for root in roots
        if len(PurePosixPath(root).parts) == 2 and PurePosixPath(root).parts[0] == "clusters"
    }
    for registry in config.registries:
        field = f"registries.{registry.name}"
        if registry.cluster is not None and registry.cluster not in clusters:
            yield Problem(
                None,
                f"{field}.cluster",
                f"no cluster {registry.cluster!r} here (clusters/{registry.cluster}): "
                f"known clusters are {sorted(clusters)}",
                CHECK,
                file=CONFIG_FILENAME,
            )
            continue
        if not is_cluster_internal(registry.url):
            continue
        if registry.cluster is None:
            yield Problem(
                None,
                f"{field}.url",
                f"{registry.url} is a cluster-internal name, which reaches another MLflow in "
                f"every cluster: say which cluster runs this registry ({field}.cluster)",
                CHECK,
                file=CONFIG_FILENAME,
            )
            continue
        canonical = urlsplit(canonical_url(registry.url))
        if not any(
            _serves(resource, canonical.hostname or "", canonical.port)
            for root, in_clusters in placed.items()
            if registry.cluster in in_clusters and root in roots
            for resource in roots[root].resources
        ):
            yield Problem(
                None,
                f"{field}.url",
                f"{registry.url}: no Service with that name and port is deployed to cluster "
                f"{registry.cluster}",
                CHECK,
                file=CONFIG_FILENAME,
            )


def _serves(resource: Resource, host: str, port: int | None) -> bool:
    if resource.kind != "Service" or resource.group != "":
        return False
    if host != f"{resource.name}.{resource.namespace}.{_CLUSTER_DOMAIN}":
        return False
    ports = (resource.body.get("spec") or {}).get("ports") or []
    return any(isinstance(entry, dict) and entry.get("port") == port for entry in ports)


def _check_promoter(promoter: Client, config: Config) -> Iterator[Problem]:
    if not promoter.owned:
        yield Problem(
            promoter.resource,
            promoter.owned_field,
            f"a promoter that owns no environment (`mlopsctl serve` refuses to start): set "
            f"{OWNED_ENVIRONMENTS} to the environments whose pins it writes",
            CHECK,
        )
        return
    policies = {policy.environment: policy for policy in config.promotion.environments}
    for environment in promoter.owned:
        if environment not in config.environments:
            yield Problem(
                promoter.resource,
                promoter.owned_field,
                f"{OWNED_ENVIRONMENTS} names {environment!r}, not one of the environments "
                f"{list(config.environments)} in {CONFIG_FILENAME}",
                CHECK,
            )
            continue
        policy = policies.get(environment)
        if policy is None:
            continue  # no promotion section: nothing says which registry or writer
        if policy.writer == "cli":
            yield Problem(
                promoter.resource,
                promoter.owned_field,
                f"{OWNED_ENVIRONMENTS} names {environment}, whose pins {CONFIG_FILENAME} gives "
                f"to `mlopsctl promote` (promotion.environments.{environment}.writer: cli): "
                "two writers",
                CHECK,
            )
        if policy.registry is None:
            yield Problem(
                promoter.resource,
                promoter.owned_field,
                f"{OWNED_ENVIRONMENTS} names {environment}, but {CONFIG_FILENAME} names no "
                f"registry for it (promotion.environments.{environment}.registry), so nothing "
                "binds its pins to the registry this promoter reads",
                CHECK,
            )
            continue
        registry = config.registry(policy.registry)
        if registry is None:
            continue  # refused when the config loaded
        if promoter.tracking_uri is None:
            yield Problem(
                promoter.resource,
                promoter.tracking_uri_field,
                f"owns {environment}, which follows {describe_registry(registry)}, but sets no "
                f"{TRACKING_URI} as a value this check can read",
                CHECK,
            )
        elif not talks_to(
            promoter.tracking_uri, promoter.resource.namespace, promoter.cluster, registry
        ):
            yield Problem(
                promoter.resource,
                promoter.tracking_uri_field,
                f"owns {environment}, which follows {describe_registry(registry)}, but reads "
                f"{_talks_to_text(promoter, config)}: it would write versions of another "
                "registry into the pins",
                CHECK,
            )


def _check_environment_client(client: Client, config: Config) -> Iterator[Problem]:
    """A workload of overlays/<env> (the model server, the webhook registration) talks to the
    registry <env>'s pins follow: a pinned version means something only in that registry."""
    parts = PurePosixPath(client.resource.root).parts
    if len(parts) < 3 or parts[0] != "overlays" or parts[1] not in config.environments:
        return
    environment = parts[1]
    policy = next(
        (each for each in config.promotion.environments if each.environment == environment), None
    )
    registry = config.registry(policy.registry) if policy and policy.registry else None
    if registry is None:
        return
    if client.tracking_uri is None:
        yield Problem(
            client.resource,
            client.tracking_uri_field,
            f"{environment}'s pins follow {describe_registry(registry)}, but {TRACKING_URI} "
            "is not a value this check can read",
            CHECK,
        )
    elif not talks_to(client.tracking_uri, client.resource.namespace, client.cluster, registry):
        yield Problem(
            client.resource,
            client.tracking_uri_field,
            f"reads {_talks_to_text(client, config)}, but {environment}'s pins follow "
            f"{describe_registry(registry)}: the versions it loads are numbered by another "
            "registry",
            CHECK,
        )


def _talks_to_text(client: Client, config: Config) -> str:
    uri = client.tracking_uri or ""
    known = [
        registry
        for registry in config.registries
        if talks_to(uri, client.resource.namespace, client.cluster, registry)
    ]
    where = f"{uri} from cluster {client.cluster}"
    return f"{where}, which is {describe_registry(known[0])}" if known else where


def _clients(state: RootState, cluster: str) -> Iterator[Client]:
    config_maps = {
        (resource.namespace, resource.name): resource.body.get("data") or {}
        for resource in state.resources
        if resource.kind == "ConfigMap" and resource.group == ""
    }
    for resource in state.resources:
        pod = pod_spec(resource)
        if pod is None:
            continue
        for path, container, _init in containers(pod):
            variables = _environment(container, resource.namespace, config_maps, path)
            words = [str(word) for word in [*(container.get("command") or [])]]
            words += [str(word) for word in container.get("args") or []]
            if words and PurePosixPath(words[0]).name == "mlopsctl":
                words = words[1:]
            uri, uri_field = variables.get(TRACKING_URI, (None, f"{path}.env"))
            flag = _flag(words, "--mlflow-uri", f"{path}.args")
            if flag is not None:
                uri, uri_field = flag
            is_promoter = (bool(words) and words[0] == "serve") or OWNED_ENVIRONMENTS in variables
            if is_promoter:
                text, owned_field = variables.get(OWNED_ENVIRONMENTS, (None, f"{path}.env"))
                flag = _flag(words, "--environments", f"{path}.args")
                if flag is not None:
                    text, owned_field = flag
                owned = tuple(
                    dict.fromkeys(name.strip() for name in (text or "").split(",") if name.strip())
                )
                yield Client(resource, cluster, uri, uri_field, owned, owned_field)
            elif TRACKING_URI in variables or flag is not None:
                yield Client(resource, cluster, uri, uri_field)


def _flag(words: list[str], name: str, field: str) -> tuple[str, str] | None:
    """The value of `--name=V` or `--name V` among a container's arguments (the last wins)."""
    found = None
    for index, word in enumerate(words):
        if word.startswith(f"{name}="):
            found = (word.partition("=")[2], field)
        elif word == name and index + 1 < len(words):
            found = (words[index + 1], field)
    return found


def _environment(
    container: dict[str, Any],
    namespace: str,
    config_maps: Mapping[tuple[str, str], dict[str, Any]],
    path: str,
) -> dict[str, tuple[str | None, str]]:
    """Each variable's value (None when it comes from somewhere this check cannot read) and the
    field that sets it; ConfigMaps rendered beside the workload are read."""
    variables: dict[str, tuple[str | None, str]] = {}
    for index, source in enumerate(container.get("envFrom") or []):
        reference = (source or {}).get("configMapRef") or {}
        data = config_maps.get((namespace, str(reference.get("name", ""))), {})
        prefix = str((source or {}).get("prefix", ""))
        for key, text in data.items():
            variables[f"{prefix}{key}"] = (str(text), f"{path}.envFrom[{index}]")
    for index, entry in enumerate(container.get("env") or []):
        if not isinstance(entry, dict) or "name" not in entry:
            continue
        field = f"{path}.env[{index}]"
        value: str | None = None
        if "valueFrom" not in entry:
            value = str(entry.get("value", ""))  # an entry without a value is the empty string
        else:
            reference = (entry.get("valueFrom") or {}).get("configMapKeyRef") or {}
            data = config_maps.get((namespace, str(reference.get("name", ""))), {})
            found = data.get(str(reference.get("key", "")))
            value = None if found is None else str(found)
        variables[str(entry["name"])] = (value, field)
    return variables

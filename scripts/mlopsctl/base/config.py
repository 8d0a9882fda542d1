"""The repository's `mlopsctl.yaml`: what the tool needs to know about the tree it manages."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mlopsctl.base.errors import MlopsctlError

CONFIG_FILENAME = "mlopsctl.yaml"

_SKIP_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "reason"],
    "properties": {
        "apiVersion": {"type": "string", "minLength": 1},
        "kind": {"type": "string", "minLength": 1},
        "reason": {"type": "string", "minLength": 1},
    },
}

_GATES_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "requireReady": {"type": "boolean"},
        "requireSignature": {"type": "boolean"},
        "minMetrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "notWorseThan": {
            "type": "object",
            "additionalProperties": False,
            "required": ["metric"],
            "properties": {
                "metric": {"type": "string", "minLength": 1},
                "tolerance": {"type": "number", "minimum": 0},
                "higherIsBetter": {"type": "boolean"},
            },
        },
    },
}

_NAME_PATTERN = "^[a-z][a-z0-9-]*$"

# Who writes an environment's pins; exactly one of them does.
WRITERS = ("promoter", "cli")

_REGISTRY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url"],
    "properties": {
        # The cluster (clusters/<name>) the registry runs in; left out for one run elsewhere.
        "cluster": {"type": "string", "pattern": _NAME_PATTERN},
        # The tracking URI its clients use (MLFLOW_TRACKING_URI): a cluster-internal name
        # reaches this registry only from its own cluster.
        "url": {"type": "string", "pattern": "^https?://[^/?#]+"},
    },
}

_PROMOTION_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["environments"],
    "properties": {
        "remote": {"type": "string", "minLength": 1},
        "branch": {"type": "string", "pattern": r"^[A-Za-z0-9._/-]+$"},
        "author": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "email"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "pattern": r"^[^<>\n]+$"},
                "email": {"type": "string", "pattern": r"^[^<>\s@]+@[^<>\s@]+$"},
            },
        },
        "environments": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["mode"],
                "properties": {
                    "mode": {"enum": ["commit", "pull-request"]},
                    "gates": _GATES_SCHEMA,
                    # The registry whose aliases this environment's pins follow (registries:).
                    "registry": {"type": "string", "pattern": _NAME_PATTERN},
                    # The one writer of this environment's pins: the promoter that owns it, or
                    # `mlopsctl promote --env <env>` run by a person or a job (no promoter may).
                    "writer": {"enum": list(WRITERS)},
                },
            },
        },
    },
}

_IMAGE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "context"],
    "properties": {
        # The image reference without tag or digest, as manifests name it.
        "name": {"type": "string", "pattern": r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+$"},
        "context": {"type": "string", "minLength": 1},
        # Relative to the repository; default <context>/Dockerfile.
        "dockerfile": {"type": "string", "minLength": 1},
    },
}

# How each key of a Secret made by hand is filled: fernet-key (a Fernet key), hex:N and
# base64:N (N random bytes), literal:VALUE, git-token (a token that may push to the repository).
_SECRET_VALUE_PATTERN = r"^(fernet-key|git-token|hex:[1-9][0-9]*|base64:[1-9][0-9]*|literal:.+)$"

_HAND_MADE_SECRET_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["namespace", "name", "keys"],
    "properties": {
        "namespace": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "keys": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": r"^[-._a-zA-Z0-9]+$"},
            "additionalProperties": {"type": "string", "pattern": _SECRET_VALUE_PATTERN},
        },
    },
}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["repository", "environments", "kubernetesVersion"],
    "properties": {
        "repository": {
            "type": "object",
            "additionalProperties": False,
            "required": ["url"],
            "properties": {"url": {"type": "string", "minLength": 1}},
        },
        "environments": {
            # A list of names, or a mapping from each name to what mlopsctl needs to reach its
            # cluster (`kubeContext`, for `status --live`).
            "oneOf": [
                {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"type": "string", "pattern": _NAME_PATTERN},
                },
                {
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": {"pattern": _NAME_PATTERN},
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"kubeContext": {"type": "string", "minLength": 1}},
                    },
                },
            ],
        },
        "registries": {
            "type": "object",
            "propertyNames": {"pattern": _NAME_PATTERN},
            "additionalProperties": _REGISTRY_SCHEMA,
        },
        "kubernetesVersion": {"type": "string", "pattern": r"^\d+\.\d+$"},
        "render": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "exclude": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
        },
        "promotion": _PROMOTION_SCHEMA,
        "images": {"type": "array", "items": _IMAGE_SCHEMA},
        "secretsCreatedByHand": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": _HAND_MADE_SECRET_SCHEMA},
        },
        "validate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "skipSchemas": {"type": "array", "items": _SKIP_SCHEMA},
                "upstreamCRDs": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^https?://"},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class SkippedSchema:
    api_version: str
    kind: str
    reason: str


@dataclass(frozen=True)
class Gates:
    """What a model version must show before an environment pins it."""

    require_ready: bool = True
    require_signature: bool = True
    min_metrics: tuple[tuple[str, float], ...] = ()
    # (metric, tolerance, higher_is_better): not worse than the version pinned now.
    not_worse_than: tuple[str, float, bool] | None = None


@dataclass(frozen=True)
class EnvironmentPolicy:
    environment: str
    mode: str  # "commit" or "pull-request"
    gates: Gates
    # The name of the registry this environment follows; None when mlopsctl.yaml declares no
    # registries (every command then follows the one registry it is pointed at).
    registry: str | None = None
    writer: str = "promoter"  # one of WRITERS


@dataclass(frozen=True)
class PromotionPolicy:
    remote: str | None = None
    branch: str = "main"
    author_name: str = "mlopsctl"
    author_email: str = "mlopsctl@localhost"
    environments: tuple[EnvironmentPolicy, ...] = ()

    def for_environment(self, environment: str) -> EnvironmentPolicy:
        for policy in self.environments:
            if policy.environment == environment:
                return policy
        raise MlopsctlError(
            f"no promotion policy for environment {environment!r} in {CONFIG_FILENAME}"
        )

    def registry_of(self, environment: str) -> str | None:
        """The name of the registry `environment` follows (None: no registries declared)."""
        return self.for_environment(environment).registry


@dataclass(frozen=True)
class Registry:
    """A model registry (an MLflow tracking server) that environments follow."""

    name: str
    url: str
    cluster: str | None = None


@dataclass(frozen=True)
class ImageBuild:
    """Where the image a manifest names is built from (repository-relative paths)."""

    name: str
    context: str
    dockerfile: str


@dataclass(frozen=True)
class HandMadeSecret:
    """A Secret an environment expects a person to create before it syncs (README)."""

    namespace: str
    name: str
    # key -> how its value is made (see _SECRET_VALUE_PATTERN)
    keys: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Config:
    repository_url: str
    environments: tuple[str, ...]
    kubernetes_version: str
    render_exclude: tuple[str, ...] = ()
    skipped_schemas: tuple[SkippedSchema, ...] = ()
    upstream_crds: tuple[str, ...] = field(default_factory=tuple)
    promotion: PromotionPolicy = field(default_factory=PromotionPolicy)
    images: tuple[ImageBuild, ...] = ()
    hand_made_secrets: tuple[tuple[str, tuple[HandMadeSecret, ...]], ...] = ()
    registries: tuple[Registry, ...] = ()
    # (environment, kubeconfig context) for the environments that name one.
    kube_contexts: tuple[tuple[str, str], ...] = ()

    def image_build(self, reference: str) -> ImageBuild | None:
        """The build of an image reference (`name:tag` or `name@digest`), if one is declared."""
        name = reference.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name = name[: len(name) - len(last)] + last.split(":", 1)[0]
        return next((image for image in self.images if image.name == name), None)

    def secrets_created_by_hand(self, environment: str) -> tuple[HandMadeSecret, ...]:
        return dict(self.hand_made_secrets).get(environment, ())

    def kube_context(self, environment: str) -> str | None:
        return dict(self.kube_contexts).get(environment)

    def registry(self, name: str) -> Registry | None:
        return next((registry for registry in self.registries if registry.name == name), None)


def find_repository_root(start: Path) -> Path:
    """The nearest directory at or above `start` that holds mlopsctl.yaml."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / CONFIG_FILENAME).is_file():
            return candidate
    raise MlopsctlError(
        f"no {CONFIG_FILENAME} in {start} or any parent directory; "
        "run mlopsctl inside the platform repository or pass --repo"
    )


def load_config(repository_root: Path) -> Config:
    path = repository_root / CONFIG_FILENAME
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MlopsctlError(f"{path}: cannot read: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise MlopsctlError(f"{path}: not valid YAML: {error}") from error
    problems = sorted(
        jsonschema.Draft202012Validator(CONFIG_SCHEMA).iter_errors(document),
        key=lambda error: list(error.absolute_path),
    )
    if problems:
        first = problems[0]
        # A oneOf (environments: a list or a mapping) fails as a whole; its branch that got
        # furthest names the field.
        while first.context:
            first = max(first.context, key=lambda error: len(error.absolute_path))
        location = ".".join(str(part) for part in first.absolute_path) or "(top level)"
        raise MlopsctlError(f"{path}: {location}: {first.message}")
    validate_section = document.get("validate", {})
    declared = document["environments"]
    environment_names = list(declared)
    kube_contexts = tuple(
        (name, str(settings["kubeContext"]))
        for name, settings in (declared.items() if isinstance(declared, dict) else ())
        if (settings or {}).get("kubeContext")
    )
    registries = tuple(
        Registry(name, item["url"], item.get("cluster"))
        for name, item in document.get("registries", {}).items()
    )
    promotion = _promotion_policy(document.get("promotion"), environment_names, registries, path)
    unknown_secret_environments = sorted(
        set(document.get("secretsCreatedByHand", {})) - set(environment_names)
    )
    if unknown_secret_environments:
        raise MlopsctlError(
            f"{path}: secretsCreatedByHand.{unknown_secret_environments[0]}: "
            f"not one of the environments {environment_names}"
        )
    return Config(
        repository_url=document["repository"]["url"],
        environments=tuple(environment_names),
        kube_contexts=kube_contexts,
        kubernetes_version=document["kubernetesVersion"],
        render_exclude=tuple(document.get("render", {}).get("exclude", [])),
        skipped_schemas=tuple(
            SkippedSchema(item["apiVersion"], item["kind"], item["reason"])
            for item in validate_section.get("skipSchemas", [])
        ),
        upstream_crds=tuple(validate_section.get("upstreamCRDs", [])),
        promotion=promotion,
        images=tuple(
            ImageBuild(
                image["name"],
                image["context"],
                image.get("dockerfile", posixpath.normpath(f"{image['context']}/Dockerfile")),
            )
            for image in document.get("images", [])
        ),
        hand_made_secrets=tuple(
            (
                environment,
                tuple(
                    HandMadeSecret(
                        secret["namespace"], secret["name"], tuple(secret["keys"].items())
                    )
                    for secret in secrets
                ),
            )
            for environment, secrets in document.get("secretsCreatedByHand", {}).items()
        ),
        registries=registries,
    )


def _gates(raw: dict[str, Any]) -> Gates:
    comparison = raw.get("notWorseThan")
    return Gates(
        require_ready=raw.get("requireReady", True),
        require_signature=raw.get("requireSignature", True),
        min_metrics=tuple(sorted((str(k), float(v)) for k, v in raw.get("minMetrics", {}).items())),
        not_worse_than=(
            None
            if comparison is None
            else (
                comparison["metric"],
                float(comparison.get("tolerance", 0.0)),
                bool(comparison.get("higherIsBetter", True)),
            )
        ),
    )


def _promotion_policy(
    raw: Any, environments: list[str], registries: tuple[Registry, ...], path: Path
) -> PromotionPolicy:
    if raw is None:
        return PromotionPolicy()
    unknown = sorted(set(raw["environments"]) - set(environments))
    if unknown:
        raise MlopsctlError(
            f"{path}: promotion.environments.{unknown[0]}: "
            f"not one of the environments {environments}"
        )
    missing = [env for env in environments if env not in raw["environments"]]
    if missing:
        raise MlopsctlError(f"{path}: promotion.environments: no policy for {missing[0]!r}")
    names = [registry.name for registry in registries]
    for env in environments:
        named = raw["environments"][env].get("registry")
        # Declared registries make the binding part of the contract: an environment that names
        # none would leave which registry may write its pins to whoever runs a promoter.
        if named is None and names:
            raise MlopsctlError(
                f"{path}: promotion.environments.{env}.registry: required, one of the "
                f"registries {names}"
            )
        if named is not None and named not in names:
            raise MlopsctlError(
                f"{path}: promotion.environments.{env}.registry: {named!r} is not one of the "
                f"registries {names}"
            )
    author = raw.get("author", {})
    return PromotionPolicy(
        remote=raw.get("remote"),
        branch=raw.get("branch", "main"),
        author_name=author.get("name", "mlopsctl"),
        author_email=author.get("email", "mlopsctl@localhost"),
        environments=tuple(
            EnvironmentPolicy(
                env,
                raw["environments"][env]["mode"],
                _gates(raw["environments"][env].get("gates", {})),
                raw["environments"][env].get("registry"),
                raw["environments"][env].get("writer", "promoter"),
            )
            for env in environments
        ),
    )

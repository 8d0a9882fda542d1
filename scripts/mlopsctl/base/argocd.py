"""What both validate and diff read from Argo CD objects: an Application's sources, a repository
URL in one spelling, the environment a root belongs to. Pure: resources and paths in, values out.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from mlopsctl.base.resources import Resource

SYNC_WAVE = "argocd.argoproj.io/sync-wave"
IN_CLUSTER = "https://kubernetes.default.svc"


def application_sources(resource: Resource) -> list[tuple[str, dict[str, Any]]]:
    spec = resource.body.get("spec") or {}
    if isinstance(spec.get("source"), dict):
        return [("spec.source", spec["source"])]
    return [
        (f"spec.sources[{index}]", source)
        for index, source in enumerate(spec.get("sources") or [])
        if isinstance(source, dict)
    ]


def normalise_repository_url(url: str) -> str:
    # Lower-cased first: "PLATFORM.GIT" names the same repository as "platform.git".
    return url.strip().lower().removesuffix("/").removesuffix(".git")


def environment_of(root: str) -> str | None:
    """`apps/<env>` and `clusters/<env>/...` roots belong to environment <env>."""
    parts = PurePosixPath(root).parts
    if len(parts) >= 2 and parts[0] in ("apps", "clusters"):
        return parts[1]
    return None

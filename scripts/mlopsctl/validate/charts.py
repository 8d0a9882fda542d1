"""The Helm charts Argo CD Applications install, rendered as Argo CD renders them: `helm template`
with the Application's release name, destination namespace, value files (from this repository,
through a `$ref` source) and inline values. Needs the charts' repositories, so only
`mlopsctl validate --network` renders them, to hold chart workloads to the policies that apply to
every workload (requests and limits, pinned images).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlopsctl.base.argocd import application_sources, normalise_repository_url
from mlopsctl.base.resources import Resource

# The policies chart workloads are held to. The others (restricted security, probes, labels) are
# the chart authors' choices: node-exporter must read the host, for one.
CHART_POLICIES = ("pinned-images", "requests-and-limits")
HELM_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class ChartSource:
    """One Helm source of one Application, with everything `helm template` needs."""

    application: Resource
    field: str
    repository_url: str
    chart: str
    version: str
    release: str
    namespace: str
    # Paths relative to this repository, in the order Helm applies them.
    value_files: tuple[str, ...]
    # Inline values (valuesObject, or values as YAML text), applied after the files.
    inline_values: str

    def describe(self) -> str:
        return f"chart {self.chart} {self.version} ({self.application.name})"

    def reference(self) -> str:
        """The chart as `helm template` takes it."""
        if "://" in self.repository_url:
            return self.chart
        return f"oci://{self.repository_url.rstrip('/')}/{self.chart}"


def chart_sources(applications: Iterable[Resource], repository_url: str) -> list[ChartSource]:
    """Pure: the Helm sources of `applications` (sources with a `chart`)."""
    own = normalise_repository_url(repository_url)
    found: list[ChartSource] = []
    for application in applications:
        spec = application.body.get("spec") or {}
        namespace = str((spec.get("destination") or {}).get("namespace", ""))
        sources = application_sources(application)
        references = {str(source["ref"]): source for _path, source in sources if "ref" in source}
        for field, source in sources:
            if "chart" not in source:
                continue
            helm: dict[str, Any] = source.get("helm") or {}
            value_files = []
            for value_file in helm.get("valueFiles") or []:
                reference, _, relative = str(value_file).removeprefix("$").partition("/")
                referenced = references.get(reference) if str(value_file).startswith("$") else None
                if referenced is not None and (
                    normalise_repository_url(str(referenced.get("repoURL", ""))) == own
                ):
                    value_files.append(relative)
            inline = helm.get("valuesObject") or helm.get("values") or ""
            found.append(
                ChartSource(
                    application=application,
                    field=field,
                    repository_url=str(source.get("repoURL", "")),
                    chart=str(source["chart"]),
                    version=str(source.get("targetRevision", "")),
                    release=str(helm.get("releaseName") or application.name),
                    namespace=namespace,
                    value_files=tuple(value_files),
                    inline_values=inline if isinstance(inline, str) else yaml.safe_dump(inline),
                )
            )
    return found


def render_chart(source: ChartSource, repository: Path, helm: str) -> tuple[str, str | None]:
    """(manifests, None) from `helm template`, or ("", why it failed)."""
    with tempfile.TemporaryDirectory(prefix="mlopsctl-helm-") as scratch:
        home = Path(scratch)
        command = [helm, "template", source.release, source.reference()]
        if "://" in source.repository_url:
            command += ["--repo", source.repository_url]
        if source.version:
            command += ["--version", source.version]
        if source.namespace:
            command += ["--namespace", source.namespace]
        for relative in source.value_files:
            command += ["--values", str(repository / relative)]
        if source.inline_values:
            inline = home / "inline-values.yaml"
            inline.write_text(source.inline_values, encoding="utf-8")
            command += ["--values", str(inline)]
        # Helm's caches and repository list in a directory of this run: nothing of the user's is
        # read or changed, and parallel renders do not share an index being written.
        environment = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        try:
            completed = subprocess.run(
                command,
                capture_output=True,
                text=True,
                check=False,
                env=environment,
                timeout=HELM_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired:
            return "", f"helm template did not finish in {HELM_TIMEOUT_SECONDS} s"
        except OSError as error:
            return "", f"cannot run {helm}: {error.strerror}"
    if completed.returncode != 0:
        message = completed.stderr.strip().removeprefix("Error: ").strip()
        return "", message or f"helm template exited with {completed.returncode}"
    return completed.stdout, None

"""A small client of the Kubernetes API for `validate --server`: a kubeconfig's context, API
discovery, and server-side dry-run apply. Side effects only (HTTPS to the API server); the
standard library only, so it runs wherever mlopsctl does.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlopsctl.base.errors import KubeApiError

FIELD_MANAGER = "mlopsctl"
_TYPED_PATCH_FIELD = re.compile(
    r"typed patch object \([^)]*\): \.(?P<field>[^:\s]+): (?P<problem>.+)$"
)
REQUEST_TIMEOUT_SECONDS = 30
THROTTLED_ATTEMPTS = 10
THROTTLED_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class ApiResource:
    plural: str
    namespaced: bool


@dataclass
class Refusal:
    """What the API server said no to: its message, and each cause's field when it names one."""

    status: int
    message: str
    causes: list[tuple[str, str]] = field(default_factory=list)


class KubeApi:
    def __init__(self, kubeconfig: Path, context: str | None = None) -> None:
        try:
            document = yaml.safe_load(kubeconfig.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise KubeApiError(f"{kubeconfig}: cannot read the kubeconfig: {error}") from error
        if not isinstance(document, dict):
            raise KubeApiError(f"{kubeconfig}: not a kubeconfig (no mapping at the top)")
        self._scratch = tempfile.TemporaryDirectory(prefix="mlopsctl-kubeapi-")
        try:
            self._load(document, context, kubeconfig)
        except KubeApiError:
            self._scratch.cleanup()
            raise
        except KeyError as error:
            self._scratch.cleanup()
            raise KubeApiError(
                f"{kubeconfig}: context {context or document.get('current-context')!r} names a "
                f"cluster or user the file does not define ({error})"
            ) from error
        except (OSError, ValueError, TypeError, AttributeError) as error:
            # A certificate that is missing or not PEM, a `-data` field that is not base64, a
            # section that is not a mapping.
            self._scratch.cleanup()
            raise KubeApiError(
                f"{kubeconfig}: context {context or document.get('current-context')!r}: cannot "
                f"use its cluster or user: {error}"
            ) from error

    def _load(self, document: dict[str, Any], context: str | None, kubeconfig: Path) -> None:
        name = context or document.get("current-context")
        contexts = {item["name"]: item["context"] for item in document.get("contexts") or []}
        if name not in contexts:
            raise KubeApiError(f"{kubeconfig}: no context {name!r} (has {sorted(contexts)})")
        chosen = contexts[name]
        clusters = {item["name"]: item["cluster"] for item in document.get("clusters") or []}
        users = {item["name"]: item["user"] for item in document.get("users") or []}
        cluster, user = clusters[chosen["cluster"]], users.get(chosen.get("user"), {})
        self.server = str(cluster["server"]).rstrip("/")
        self.context = ssl.create_default_context(
            cafile=self._file(cluster, "certificate-authority", kubeconfig)
        )
        certificate = self._file(user, "client-certificate", kubeconfig)
        if certificate:
            self.context.load_cert_chain(certificate, self._file(user, "client-key", kubeconfig))
        self.token = user.get("token")
        # A projected service account token is rotated on disk: read it at every request, as
        # client-go does with a kubeconfig's tokenFile.
        token_file = self._file(user, "tokenFile", kubeconfig)
        self.token_file = Path(token_file) if token_file else None
        self._resources: dict[tuple[str, str], ApiResource] | None = None

    def _file(self, section: dict[str, Any], key: str, kubeconfig: Path) -> str | None:
        """A file the kubeconfig names, relative to it, or one written from its `-data` form."""
        if section.get(f"{key}-data"):
            path = Path(self._scratch.name) / key
            path.write_bytes(base64.b64decode(section[f"{key}-data"]))
            return str(path)
        if section.get(key):
            return str((kubeconfig.parent / Path(section[key]).expanduser()).resolve())
        return None

    def close(self) -> None:
        self._scratch.cleanup()

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, the JSON answer). A 429 is asked again, after the Retry-After the server
        gives (at most THROTTLED_WAIT_SECONDS each), THROTTLED_ATTEMPTS times in all, as
        client-go does: the API server answers it while it is busy, or for a second after a new
        CRD while the CRD's storage starts."""
        for _attempt in range(THROTTLED_ATTEMPTS - 1):
            status, answer, retry_after = self._request_once(method, path, body, content_type)
            if status != 429:
                return status, answer
            time.sleep(min(retry_after, THROTTLED_WAIT_SECONDS))
        status, answer, _retry_after = self._request_once(method, path, body, content_type)
        return status, answer

    def _request_once(
        self, method: str, path: str, body: bytes | None, content_type: str
    ) -> tuple[int, dict[str, Any], float]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        token = self.token
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as error:
                raise KubeApiError(f"{self.token_file}: cannot read the token: {error}") from error
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.server + path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(
                request, context=self.context, timeout=REQUEST_TIMEOUT_SECONDS
            ) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as error:
            try:
                answer = json.loads(error.read() or b"{}")
            except ValueError:
                answer = {"message": error.reason}
            try:
                retry_after = float(error.headers.get("Retry-After") or 1)
            except ValueError:
                retry_after = 1.0
            return error.code, answer if isinstance(answer, dict) else {}, retry_after
        except (urllib.error.URLError, OSError) as error:
            raise KubeApiError(f"{self.server}: cannot reach the API server: {error}") from error
        try:
            answer = json.loads(text or b"{}")
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            # A login page or a proxy answering for the API server: say so, not a traceback.
            raise KubeApiError(
                f"{self.server}{path.split('?')[0]}: HTTP {status} but not a Kubernetes API "
                f"answer (not a JSON object: {text[:80]!r})"
            )
        return status, answer, 0.0

    def resources(self) -> dict[tuple[str, str], ApiResource]:
        """(apiVersion, kind) -> where the server serves it, from discovery (asked once)."""
        if self._resources is None:
            found: dict[tuple[str, str], ApiResource] = {}
            versions = ["v1"]
            _status, groups = self.request("GET", "/apis")
            for group in groups.get("groups") or []:
                versions.extend(item["groupVersion"] for item in group.get("versions") or [])
            for group_version in versions:
                path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
                status, listing = self.request("GET", path)
                if status != 200:
                    continue
                for resource in listing.get("resources") or []:
                    if "/" not in resource["name"]:
                        found[(group_version, resource["kind"])] = ApiResource(
                            resource["name"], bool(resource["namespaced"])
                        )
            self._resources = found
        return self._resources

    def forget_discovery(self) -> None:
        self._resources = None

    def path_of(self, body: dict[str, Any], namespace: str) -> str | None:
        """The object's URL path, or None when the server does not serve its kind."""
        api_version, kind = str(body.get("apiVersion", "")), str(body.get("kind", ""))
        served = self.resources().get((api_version, kind))
        if served is None:
            return None
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        name = urllib.parse.quote(str((body.get("metadata") or {}).get("name", "")), safe="")
        if served.namespaced:
            return f"{prefix}/namespaces/{namespace}/{served.plural}/{name}"
        return f"{prefix}/{served.plural}/{name}"

    def apply(self, body: dict[str, Any], namespace: str, dry_run: bool) -> Refusal | None:
        """Server-side apply (strict field validation), for real or as a dry run; None when the
        server accepts it."""
        path = self.path_of(body, namespace)
        if path is None:
            return Refusal(
                404, f"the server does not serve {body.get('apiVersion')} {body.get('kind')}"
            )
        query = {"fieldManager": FIELD_MANAGER, "fieldValidation": "Strict", "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        status, answer = self.request(
            "PATCH",
            f"{path}?{urllib.parse.urlencode(query)}",
            json.dumps(body).encode(),
            "application/apply-patch+yaml",
        )
        if status in (200, 201):
            return None
        details = answer.get("details") or {}
        message = str(answer.get("message", f"HTTP {status}"))
        causes = [
            (str(cause.get("field", "")), str(cause.get("message", "")))
            for cause in details.get("causes") or []
        ]
        # Server-side apply names a field the schema lacks in its message only:
        # "failed to create typed patch object (ns/name; ...): .spec.x: field not declared ..."
        typed = _TYPED_PATCH_FIELD.search(message)
        if not causes and typed:
            causes = [(typed["field"], typed["problem"])]
        return Refusal(status, message, causes)


def kubeconfig_path(given: Path | None) -> Path:
    """--kubeconfig, else $KUBECONFIG, else ~/.kube/config. kubectl merges every file a
    $KUBECONFIG list names; this reads one: the first that exists (else the first named)."""
    if given is not None:
        return given
    listed = [Path(part) for part in os.environ.get("KUBECONFIG", "").split(os.pathsep) if part]
    existing = [path for path in listed if path.is_file()]
    return (existing or listed or [Path.home() / ".kube" / "config"])[0]


SERVICE_ACCOUNT_DIRECTORY = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER = "in-cluster"


def in_cluster_kubeconfig(
    destination: Path,
    environment: Mapping[str, str],
    service_account: Path = SERVICE_ACCOUNT_DIRECTORY,
) -> Path:
    """A kubeconfig for the pod's own service account, as client-go's in-cluster config reads it:
    the API server from KUBERNETES_SERVICE_HOST/PORT, the mounted CA and a token file."""
    host, port = (
        environment.get("KUBERNETES_SERVICE_HOST"),
        environment.get("KUBERNETES_SERVICE_PORT", "443"),
    )
    if not host:
        raise KubeApiError("in-cluster: KUBERNETES_SERVICE_HOST is not set (not running in a pod?)")
    for name in ("token", "ca.crt"):
        if not (service_account / name).is_file():
            raise KubeApiError(
                f"in-cluster: {service_account / name} is missing (is the service account "
                "token mounted? automountServiceAccountToken)"
            )
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    destination.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "in-cluster",
                        "cluster": {
                            "server": server,
                            "certificate-authority": str(service_account / "ca.crt"),
                        },
                    }
                ],
                "users": [
                    {"name": "in-cluster", "user": {"tokenFile": str(service_account / "token")}}
                ],
                "contexts": [
                    {
                        "name": "in-cluster",
                        "context": {"cluster": "in-cluster", "user": "in-cluster"},
                    }
                ],
                "current-context": "in-cluster",
            }
        )
    )
    return destination

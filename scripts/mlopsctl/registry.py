"""The MLflow model registry, over its REST API.

Plain HTTP keeps the promoter free of MLflow's import weight and gives it control of timeouts,
retries and a count of the calls it makes. Everything a registry answers is checked before use.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from mlopsctl.errors import MlopsctlError


class RegistryError(MlopsctlError):
    """The registry answered something unusable, or could not be reached."""

    exit_code = 3


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: str
    status: str
    run_id: str
    source: str
    aliases: tuple[str, ...] = ()


class Registry(Protocol):
    """What promotion needs from a model registry."""

    base_url: str

    def version_by_alias(self, model: str, alias: str) -> ModelVersion | None: ...
    def version(self, model: str, version: str) -> ModelVersion | None: ...
    def run_metrics(self, run_id: str) -> dict[str, float]: ...
    def signature(self, model: str, version: str) -> dict[str, Any] | None: ...
    def set_alias(self, model: str, alias: str, version: str) -> None: ...


_NOT_FOUND = object()


def authorization_from(environment: Mapping[str, str]) -> str:
    """The Authorization header MLflow's client would send: MLFLOW_TRACKING_TOKEN (bearer), or
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (basic); empty without them."""
    token = environment.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return f"Bearer {token}"
    username = environment.get("MLFLOW_TRACKING_USERNAME")
    if username:
        password = environment.get("MLFLOW_TRACKING_PASSWORD", "")
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    return ""


@dataclass
class MlflowRegistry:
    base_url: str
    timeout_seconds: float = 10.0
    attempts: int = 4
    backoff_seconds: float = 0.5
    calls: int = 0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    # MLflow's own client variables, so one set of credentials serves both.
    authorization: str = field(default_factory=lambda: authorization_from(os.environ), repr=False)

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise RegistryError(f"MLflow tracking URI {self.base_url!r} is not an http(s) URL")
        self.base_url = self.base_url.rstrip("/")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        return headers

    def _request(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        missing_when: str = "RESOURCE_DOES_NOT_EXIST",
    ) -> Any:
        """JSON from the registry; _NOT_FOUND when the answer says what was asked is not there."""
        url = f"{self.base_url}{path}"
        data = json.dumps(payload).encode() if payload is not None else None
        last_problem = ""
        for attempt in range(1, self.attempts + 1):
            self.calls += 1
            request = urllib.request.Request(url, data=data, method=method, headers=self._headers())
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                    body = response.read()
                    return json.loads(body) if body else {}
            except urllib.error.HTTPError as error:
                text = error.read().decode("utf-8", "replace")
                if (
                    error.code == 404
                    or "RESOURCE_DOES_NOT_EXIST" in text
                    or (error.code == 400 and missing_when in text)
                ):
                    return _NOT_FOUND
                if error.code not in (429, 500, 502, 503, 504):
                    raise RegistryError(
                        f"MLflow refused {method} {path}: HTTP {error.code}: {text[:300]}"
                    ) from error
                last_problem = f"HTTP {error.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                last_problem = str(getattr(error, "reason", error))
            except ValueError as error:
                raise RegistryError(
                    f"MLflow answered {method} {path} with invalid JSON: {error}"
                ) from error
            if attempt < self.attempts:
                # Exponential backoff with full jitter: replicas retrying together spread out.
                self.sleep(random.uniform(0, self.backoff_seconds * 2 ** (attempt - 1)))
        raise RegistryError(
            f"MLflow at {self.base_url} is unreachable ({last_problem}) "
            f"after {self.attempts} attempts"
        )

    @staticmethod
    def _model_version(answer: Any, where: str) -> ModelVersion:
        try:
            raw = answer["model_version"]
            return ModelVersion(
                model=str(raw["name"]),
                version=str(raw["version"]),
                status=str(raw.get("status", "")),
                run_id=str(raw.get("run_id", "") or ""),
                source=str(raw.get("source", "") or ""),
                aliases=tuple(str(alias) for alias in raw.get("aliases", []) or []),
            )
        except (KeyError, TypeError) as error:
            raise RegistryError(
                f"MLflow answered {where} without a usable model_version"
            ) from error

    def version_by_alias(self, model: str, alias: str) -> ModelVersion | None:
        query = urllib.parse.urlencode({"name": model, "alias": alias})
        # MLflow answers a missing alias with 400 INVALID_PARAMETER_VALUE "... not found."
        answer = self._request(
            "GET", f"/api/2.0/mlflow/registered-models/alias?{query}", missing_when="not found"
        )
        return (
            None if answer is _NOT_FOUND else self._model_version(answer, f"alias {model}@{alias}")
        )

    def version(self, model: str, version: str) -> ModelVersion | None:
        query = urllib.parse.urlencode({"name": model, "version": version})
        answer = self._request("GET", f"/api/2.0/mlflow/model-versions/get?{query}")
        return None if answer is _NOT_FOUND else self._model_version(answer, f"{model} v{version}")

    def run_metrics(self, run_id: str) -> dict[str, float]:
        if not run_id:
            return {}
        query = urllib.parse.urlencode({"run_id": run_id})
        answer = self._request("GET", f"/api/2.0/mlflow/runs/get?{query}")
        if answer is _NOT_FOUND:
            return {}
        try:
            metrics = answer["run"]["data"].get("metrics", [])
            return {str(item["key"]): float(item["value"]) for item in metrics}
        except (KeyError, TypeError, ValueError) as error:
            raise RegistryError(f"MLflow answered run {run_id} with unreadable metrics") from error

    def signature(self, model: str, version: str) -> dict[str, Any] | None:
        """The model's signature from its MLmodel file, read through the artifact proxy."""
        query = urllib.parse.urlencode({"name": model, "version": version})
        answer = self._request("GET", f"/api/2.0/mlflow/model-versions/get-download-uri?{query}")
        if answer is _NOT_FOUND:
            return None
        location = str(answer.get("artifact_uri", ""))
        if not location.startswith("mlflow-artifacts:/"):
            raise RegistryError(
                f"{model} v{version}: artifacts at {location!r} are not served by the tracking "
                "server (--serve-artifacts), so the signature cannot be read"
            )
        path = urllib.parse.quote(
            location.removeprefix("mlflow-artifacts:/").strip("/") + "/MLmodel"
        )
        url = f"/api/2.0/mlflow-artifacts/artifacts/{path}"
        self.calls += 1
        try:
            request = urllib.request.Request(f"{self.base_url}{url}", headers=self._headers())
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                mlmodel = yaml.safe_load(response.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise RegistryError(
                f"{model} v{version}: reading MLmodel failed: HTTP {error.code}"
            ) from error
        except (urllib.error.URLError, TimeoutError, yaml.YAMLError) as error:
            raise RegistryError(f"{model} v{version}: reading MLmodel failed: {error}") from error
        signature = mlmodel.get("signature") if isinstance(mlmodel, dict) else None
        return signature if isinstance(signature, dict) and signature.get("inputs") else None

    def set_alias(self, model: str, alias: str, version: str) -> None:
        answer = self._request(
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            {"name": model, "alias": alias, "version": version},
        )
        if answer is _NOT_FOUND:
            raise RegistryError(f"cannot move {model}@{alias}: {model} v{version} does not exist")

    def register_webhook(
        self, name: str, url: str, events: list[tuple[str, str]], secret: str
    ) -> str:
        """Create the webhook called `name`, or bring it to this url, events and secret.

        Returns "created" or "updated". Idempotent: running it twice leaves one webhook.
        """
        body = {
            "name": name,
            "url": url,
            "events": [
                {"entity": entity.upper(), "action": action.upper()} for entity, action in events
            ],
            "secret": secret,
            "status": "ACTIVE",
        }
        existing = None
        page_token = ""
        while existing is None:
            query = urllib.parse.urlencode({"max_results": 100, "page_token": page_token})
            answer = self._request("GET", f"/api/2.0/mlflow/webhooks?{query}")
            if answer is _NOT_FOUND or not isinstance(answer, dict):
                raise RegistryError("MLflow answered the webhook list with something unusable")
            existing = next((w for w in answer.get("webhooks", []) if w.get("name") == name), None)
            page_token = str(answer.get("next_page_token") or "")
            if not page_token:
                break
        if existing is None:
            created = self._request("POST", "/api/2.0/mlflow/webhooks", body)
            if created is _NOT_FOUND:
                raise RegistryError(
                    "this MLflow server has no webhook API (MLflow 3.3+, SQL backend)"
                )
            return "created"
        self._request("PATCH", f"/api/2.0/mlflow/webhooks/{existing['webhook_id']}", body)
        return "updated"

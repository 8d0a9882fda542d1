"""The MLflow model registry, through MLflow's own client (`MlflowClient`, from mlflow-skinny).

MLflow's client speaks every tracking URI scheme and auth plugin MLflow supports (token and basic
auth from MLFLOW_TRACKING_TOKEN / _USERNAME / _PASSWORD, Databricks, request-auth plugins) and
tells MLflow's own RESOURCE_DOES_NOT_EXIST apart from every other failure. This module puts it
behind the small `Registry` protocol that promotion reads and tests replace, and adds what the
promoter needs on top: bounded timeouts and retries, a count of the calls made, answers checked
before use, and errors that name the registry and what was being done.

Only MLflow's own "not found" answers mean "not there": any other answer (a 404 from a wrong path
prefix or a proxy's HTML page, a 5xx, a body that is not MLflow's) is a `RegistryError`, so a
misconfigured registry can never read as "nothing to do".
"""

from __future__ import annotations

import collections
import math
import os
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import yaml

from mlopsctl.base.errors import RegistryError

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion as MlflowModelVersion
    from mlflow.entities.webhook import Webhook, WebhookEvent, WebhookEventStr
    from mlflow.exceptions import MlflowException
    from mlflow.store.entities.paged_list import PagedList
    from mlflow.tracking import MlflowClient


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


# MLflow's own defaults (120 s per request, 7 retries with backoff factor 2) let one call take
# minutes. The promoter's loop is itself the long-term retry (a failed pass is counted and the
# next one comes at the next interval), so one call only rides out a blip: 4 attempts of at most
# 10 s, with MLflow's random jitter (up to MLFLOW_HTTP_REQUEST_BACKOFF_JITTER, 1 s) between
# them and no exponential growth (MLflow's factor is a whole number; 1 would already wait
# 2 + 4 s more).
DEFAULT_TIMEOUT_SECONDS = 10
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF_FACTOR = 0

TIMEOUT_VARIABLE = "MLFLOW_HTTP_REQUEST_TIMEOUT"
RETRIES_VARIABLE = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
BACKOFF_VARIABLE = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"

# MLflow reads its HTTP settings from the process environment at every request; there is no
# per-client or per-call argument. Each call therefore runs with its settings written there,
# under `_settings_gate`: calls that share one set of settings run at once (`status` and the
# promoter's plan read thousands of aliases concurrently), while a call with other settings (a
# webhook create that must not be retried, `mlopsctl diff`'s shorter timeout) waits until they
# have drained, and they for it: a request never reads settings written for another call.
# Each key is added once per process and then only changed, never removed: a key added or
# removed while another thread copies os.environ (for a subprocess) can break that copy; a
# changed value cannot. Every write of os.environ here is made under this lock.
_environment_lock = threading.Lock()
# What this module wrote, so a later MlflowRegistry does not take it for the operator's setting,
# and what the operator had set before it was overwritten.
_written: dict[str, str] = {}
_operator_values: dict[str, str | None] = {}

_T = TypeVar("_T")

# The tracking URIs MLflow reads without a scheme (the default Databricks profile).
_SCHEMELESS_URIS = frozenset({"databricks", "databricks-uc"})


def _operator_setting(name: str) -> int | None:
    value = os.environ.get(name)
    if value is not None and _written.get(name) == value:
        value = _operator_values.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise RegistryError(f"${name} must be a whole number, not {value!r}") from None


def _write_settings(settings: tuple[tuple[str, str], ...]) -> None:
    """Put `settings` in os.environ for MLflow to read; the caller holds `_environment_lock`."""
    for name, value in settings:
        current = os.environ.get(name)
        if current != _written.get(name):
            _operator_values[name] = current
        if current != value:
            os.environ[name] = value
        _written[name] = value


@dataclass(eq=False)
class _Waiter:
    settings: tuple[tuple[str, str], ...]
    admitted: bool = False


class _SettingsGate:
    """A shared lock keyed by a value: any number of holders of the value in force at once; a
    caller with another value waits until they drain, and then holds the gate with every other
    waiter of its value.

    Fair both ways: once a caller with another value waits, newcomers with the value in force
    queue behind it (a steady stream of reads cannot starve a webhook create), and waiters are
    admitted oldest value first. The settings are written to os.environ each time a value comes
    into force, and checked against os.environ then even when the value is the same as the
    last one: something else (a test's monkeypatch, the operator's code) may have changed the
    variables while no call was running, and a request must read what its call asked for.

    Re-entrant for the same value in one thread, as the plain RLock before it was; a nested
    call with other settings would wait for its own caller, and is refused instead.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(_environment_lock)
        self._in_force: tuple[tuple[str, str], ...] | None = None
        self._holders = 0
        self._waiting: collections.deque[_Waiter] = collections.deque()
        self._held = threading.local()

    @contextmanager
    def holding(self, settings: Mapping[str, str]) -> Iterator[None]:
        value = tuple(sorted(settings.items()))
        held: tuple[tuple[str, str], ...] | None = getattr(self._held, "value", None)
        if held is not None:
            if held != value:
                raise RuntimeError(
                    "a registry call with other HTTP settings was made from inside a registry "
                    "call; it would wait for its own caller"
                )
            yield
            return
        self._enter(value)
        self._held.value = value
        try:
            yield
        finally:
            self._held.value = None
            self._leave()

    def _enter(self, value: tuple[tuple[str, str], ...]) -> None:
        with self._condition:
            if self._holders == 0 and not self._waiting:
                _write_settings(value)
                self._in_force = value
                self._holders = 1
                return
            if self._in_force == value and not self._waiting:
                self._holders += 1
                return
            waiter = _Waiter(value)
            self._waiting.append(waiter)
            try:
                while not waiter.admitted:
                    self._condition.wait()
            except BaseException:
                # Interrupted (Ctrl-C) while waiting: a place kept for a caller that is gone
                # would hold the gate shut for everyone after it.
                if waiter.admitted:
                    self._release()
                else:
                    self._waiting.remove(waiter)
                raise

    def _leave(self) -> None:
        with self._condition:
            self._release()

    def _release(self) -> None:
        """One holder less; the last one out lets the oldest waiting value in. Holds the lock."""
        self._holders -= 1
        if self._holders:
            return
        self._in_force = None
        if self._waiting:
            value = self._waiting[0].settings
            _write_settings(value)
            self._in_force = value
            admitted = [waiter for waiter in self._waiting if waiter.settings == value]
            self._waiting = collections.deque(
                waiter for waiter in self._waiting if waiter.settings != value
            )
            for waiter in admitted:
                waiter.admitted = True
            self._holders = len(admitted)
            self._condition.notify_all()


_settings_gate = _SettingsGate()


def _does_not_exist(error: MlflowException) -> bool:
    return bool(error.error_code == "RESOURCE_DOES_NOT_EXIST")


def _http_status(error: MlflowException) -> int:
    """The HTTP status MLflow's error code stands for (404 for RESOURCE_DOES_NOT_EXIST)."""
    return int(error.get_http_status_code())  # type: ignore[no-untyped-call]


def _reason(error: BaseException) -> str:
    # MLflow quotes whole response bodies (a proxy's HTML page); a line of it says enough.
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _transport_failure(error: BaseException) -> BaseException | None:
    """The `requests` failure under an MLflow error: nothing (or nothing whole) came back."""
    import requests

    cause = error.__cause__ or error.__context__
    return cause if isinstance(cause, requests.exceptions.RequestException) else None


def _list_webhooks(client: MlflowClient, page_token: str | None) -> PagedList[Webhook]:
    return client.list_webhooks(max_results=100, page_token=page_token)


def _search_model_versions(
    client: MlflowClient, filter_string: str, page_token: str | None
) -> PagedList[MlflowModelVersion]:
    return client.search_model_versions(filter_string, max_results=1000, page_token=page_token)


def _delete_webhook(client: MlflowClient, webhook_id: str) -> None:
    client.delete_webhook(webhook_id)


class _AnswerLost(Exception):
    """A non-idempotent call whose outcome is unknown: it may have taken effect."""


_import_lock = threading.Lock()


def _import_mlflow() -> None:
    """MLflow's modules, imported whole by one thread while the others wait.

    Imported on first use, so only the commands that use the registry pay for them. Two threads
    importing a module of MLflow at once can each see the `mlflow` package half initialised
    ("partially initialized module 'mlflow' has no attribute 'version'", met under the
    promoter's concurrent reads)."""
    with _import_lock:
        with _environment_lock:
            # MLflow decides at import whether to send usage reports (`set_telemetry_client`):
            # a promoter must not send them from inside a cluster, nor a test from outside
            # loopback. MLFLOW_DISABLE_TELEMETRY=false set by the operator wins.
            if "MLFLOW_DISABLE_TELEMETRY" not in os.environ:
                os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        import mlflow.artifacts
        import mlflow.exceptions
        import mlflow.tracking
        import requests

        del mlflow, requests  # for the threads that follow; nothing to use here


@dataclass
class MlflowRegistry:
    """The `Registry` of an MLflow tracking server, at any tracking URI MLflow's client speaks.

    `timeout_seconds`, `attempts` and `backoff_factor` bound each call; left unset, each comes
    from MLflow's own variable (MLFLOW_HTTP_REQUEST_TIMEOUT, _MAX_RETRIES + 1, _BACKOFF_FACTOR)
    when the operator set it, else from the bounded defaults above. `calls` counts the registry
    operations asked for (MLflow's internal retries of one operation are not counted).
    """

    base_url: str
    timeout_seconds: float | None = None
    attempts: int | None = None
    backoff_factor: int | None = None
    calls: int = 0
    _client: MlflowClient | None = field(default=None, init=False, repr=False)
    # `calls += 1` is a read and a write: two threads can both read 5 and both write 6.
    _calls_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    _client_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        parsed = urllib.parse.urlparse(self.base_url)
        # Without a scheme MLflow takes the URI for a local directory and would quietly create
        # an empty file store there; "host:5000" is nearly always a missing "http://".
        schemeless = not parsed.scheme and self.base_url not in _SCHEMELESS_URIS
        if schemeless or (parsed.scheme in ("http", "https") and not parsed.netloc):
            raise RegistryError(
                f"MLflow tracking URI {self.base_url!r} is not a URI MLflow's client can reach "
                "(for a tracking server: http://host:port)"
            )
        if self.timeout_seconds is None:
            self.timeout_seconds = _operator_setting(TIMEOUT_VARIABLE) or DEFAULT_TIMEOUT_SECONDS
        if self.attempts is None:
            retries = _operator_setting(RETRIES_VARIABLE)
            self.attempts = DEFAULT_ATTEMPTS if retries is None else retries + 1
        if self.backoff_factor is None:
            backoff = _operator_setting(BACKOFF_VARIABLE)
            self.backoff_factor = DEFAULT_BACKOFF_FACTOR if backoff is None else backoff
        if self.timeout_seconds <= 0 or self.attempts < 1 or self.backoff_factor < 0:
            raise RegistryError(
                f"registry timeout ({self.timeout_seconds} s), attempts ({self.attempts}) and "
                f"backoff factor ({self.backoff_factor}) must be positive"
            )

    # -- plumbing ----------------------------------------------------------------------------

    def _settings(self, attempts: int) -> dict[str, str]:
        assert self.timeout_seconds is not None and self.backoff_factor is not None
        return {
            TIMEOUT_VARIABLE: str(math.ceil(self.timeout_seconds)),
            RETRIES_VARIABLE: str(attempts - 1),
            BACKOFF_VARIABLE: str(self.backoff_factor),
        }

    def _mlflow(self) -> MlflowClient:
        """The one MlflowClient of this registry, shared by every thread that calls it.

        MLflow's client is safe to call from threads (checked in MLflow 3.17's sources): each
        request builds its headers and credentials afresh from the environment
        (`rest_utils.http_request`, `resolve_request_headers`), and sends through a
        `requests.Session` that `request_utils._get_request_session` caches per retry policy
        and process (an `functools.lru_cache`, itself thread-safe; two threads that miss it at
        once build two sessions and one is kept). A session's connections come from urllib3's
        pool, which hands each connection to one request at a time; the server sets no cookies
        for the session's jar to share. The pool keeps MLFLOW_HTTP_POOL_MAXSIZE (10) connections
        per host: more concurrent calls than that would open and throw away connections, each
        with a warning, so callers keep their concurrency below it. The registry client inside
        MlflowClient is made on first use, unlocked; two threads racing there would each make
        one and both work.
        """
        with self._client_lock:
            if self._client is None:
                _import_mlflow()
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.base_url, registry_uri=self.base_url)
            return self._client

    def _call(
        self,
        what: str,
        operation: Callable[[MlflowClient], _T],
        missing: Callable[[MlflowException], bool] = _does_not_exist,
        attempts: int | None = None,
    ) -> _T | None:
        """`operation`'s result; None only when `missing` recognises MLflow's answer."""
        _import_mlflow()  # before any import of MLflow in this thread
        from mlflow.exceptions import MlflowException

        attempts = attempts or self.attempts or DEFAULT_ATTEMPTS
        with self._calls_lock:
            self.calls += 1
        with _settings_gate.holding(self._settings(attempts)):
            try:
                # Inside: MLflow refuses a tracking URI scheme it has no store for only here.
                return operation(self._mlflow())
            except MlflowException as error:
                if _transport_failure(error) is None and missing(error):
                    return None
                raise self._error(what, error, attempts) from error
            except Exception as error:
                # Anything else out of MLflow's client here comes from an answer it could not
                # read (protobuf parse errors, unexpected shapes): the registry is unusable.
                raise RegistryError(
                    f"MLflow at {self.base_url}: {what} failed: {type(error).__name__}: "
                    f"{_reason(error)}"
                ) from error

    def _error(self, what: str, error: MlflowException, attempts: int) -> RegistryError:
        failure = _transport_failure(error)
        if failure is not None:
            import requests

            if isinstance(failure, requests.exceptions.ConnectionError | requests.Timeout):
                return RegistryError(
                    f"MLflow at {self.base_url} is unreachable ({what}) after {attempts} "
                    f"attempts: {_reason(failure)}"
                )
            return RegistryError(
                f"MLflow at {self.base_url} kept failing ({what}) after {attempts} attempts: "
                f"{_reason(failure)}"
            )
        hint = ""
        if _http_status(error) == 404 and not _does_not_exist(error):
            # A 404 that is not MLflow's RESOURCE_DOES_NOT_EXIST: the API is not where the URI
            # says (a wrong path prefix), or something else (a proxy) answered.
            hint = f" (is {self.base_url} the root of an MLflow tracking server?)"
        reason = _reason(error)
        if not reason.startswith(f"{error.error_code}:"):
            reason = f"{error.error_code}: {reason}"
        return RegistryError(f"MLflow at {self.base_url}: {what} failed: {reason}{hint}")

    @staticmethod
    def _model_version(found: MlflowModelVersion, where: str) -> ModelVersion:
        name, version = getattr(found, "name", None), getattr(found, "version", None)
        if not name or version in (None, ""):
            raise RegistryError(f"MLflow answered {where} without a usable model_version")
        return ModelVersion(
            model=str(name),
            version=str(version),
            status=str(found.status or ""),
            run_id=str(found.run_id or ""),
            source=str(found.source or ""),
            aliases=tuple(str(alias) for alias in (found.aliases or [])),
        )

    # -- the Registry protocol ---------------------------------------------------------------

    def version_by_alias(self, model: str, alias: str) -> ModelVersion | None:
        def alias_missing(error: MlflowException) -> bool:
            # MLflow answers a missing alias of an existing model with INVALID_PARAMETER_VALUE
            # "Registered model alias <alias> not found." (and a missing model with
            # RESOURCE_DOES_NOT_EXIST); no other invalid-parameter answer means "not there".
            return _does_not_exist(error) or (
                error.error_code == "INVALID_PARAMETER_VALUE"
                and f"Registered model alias {alias} not found" in error.message
            )

        found = self._call(
            f"reading alias {model}@{alias}",
            lambda client: client.get_model_version_by_alias(model, alias),
            missing=alias_missing,
        )
        return None if found is None else self._model_version(found, f"alias {model}@{alias}")

    def version(self, model: str, version: str) -> ModelVersion | None:
        found = self._call(
            f"reading {model} v{version}", lambda client: client.get_model_version(model, version)
        )
        return None if found is None else self._model_version(found, f"{model} v{version}")

    def run_metrics(self, run_id: str) -> dict[str, float]:
        if not run_id:
            return {}
        run = self._call(f"reading run {run_id}", lambda client: client.get_run(run_id))
        if run is None:
            return {}
        try:
            return {str(key): float(value) for key, value in run.data.metrics.items()}
        except (AttributeError, TypeError, ValueError) as error:
            raise RegistryError(f"MLflow answered run {run_id} with unreadable metrics") from error

    def signature(self, model: str, version: str) -> dict[str, Any] | None:
        """The model's signature from its MLmodel file, read through MLflow's artifact store."""
        _import_mlflow()
        import mlflow.artifacts

        location = self._call(
            f"finding the artifacts of {model} v{version}",
            lambda client: client.get_model_version_download_uri(model, version),
        )
        if not location:
            return None
        location = str(location).rstrip("/")
        with tempfile.TemporaryDirectory(prefix="mlopsctl-mlmodel-") as scratch:
            try:
                downloaded = self._call(
                    f"reading the MLmodel of {model} v{version} at {location}",
                    lambda _client: mlflow.artifacts.download_artifacts(
                        artifact_uri=f"{location}/MLmodel",
                        dst_path=scratch,
                        tracking_uri=self.base_url,
                    ),
                )
            except RegistryError:
                # MLflow's artifact download reports a missing file like any other failure;
                # only the store's own listing can say MLmodel is not there.
                if self._has_no_mlmodel(location, model, version):
                    return None
                raise
            try:
                mlmodel = yaml.safe_load(Path(str(downloaded)).read_text())
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
                raise RegistryError(
                    f"{model} v{version}: the MLmodel at {location} is unreadable: {error}"
                ) from error
        signature = mlmodel.get("signature") if isinstance(mlmodel, dict) else None
        return signature if isinstance(signature, dict) and signature.get("inputs") else None

    def _has_no_mlmodel(self, location: str, model: str, version: str) -> bool:
        import mlflow.artifacts

        listed = self._call(
            f"listing the artifacts of {model} v{version} at {location}",
            lambda _client: mlflow.artifacts.list_artifacts(
                artifact_uri=location, tracking_uri=self.base_url
            ),
        )
        return not any(Path(entry.path).name == "MLmodel" for entry in listed or [])

    def set_alias(self, model: str, alias: str, version: str) -> None:
        # Setting an alias is idempotent, so MLflow's retries of it are safe.
        self._call(
            f"moving {model}@{alias} to v{version}",
            lambda client: client.set_registered_model_alias(model, alias, version),
            missing=lambda _error: False,
        )

    # -- model version tags ------------------------------------------------------------------

    def versions_tagged(self, key: str) -> dict[tuple[str, str], dict[str, str]]:
        """(model, version) -> its tags, for every version that carries the tag `key`."""
        if "`" in key:
            raise RegistryError(f"tag key {key!r}: a backtick cannot be searched for")
        found: dict[tuple[str, str], dict[str, str]] = {}
        page_token: str | None = None
        while True:
            page = self._call(
                f"searching versions tagged {key}",
                partial(
                    _search_model_versions,
                    filter_string=f"tags.`{key}` LIKE '%'",
                    page_token=page_token,
                ),
                missing=lambda _error: False,
            )
            if page is None:  # unreachable: nothing is "missing" here
                raise RegistryError(f"MLflow at {self.base_url} answered no version list")
            for version in page:
                found[(str(version.name), str(version.version))] = {
                    str(tag_key): str(value) for tag_key, value in (version.tags or {}).items()
                }
            page_token = page.token or None
            if not page_token:
                return found

    def set_version_tag(self, model: str, version: str, key: str, value: str) -> None:
        # Setting a tag is idempotent, so MLflow's retries of it are safe.
        self._call(
            f"tagging {model} v{version} with {key}",
            lambda client: client.set_model_version_tag(model, version, key, value),
            missing=lambda _error: False,
        )

    def delete_version_tag(self, model: str, version: str, key: str) -> None:
        """Removes the tag; a version (or tag) that is already gone is not an error."""
        self._call(
            f"removing tag {key} from {model} v{version}",
            lambda client: client.delete_model_version_tag(model, version, key),
        )

    # -- webhooks ----------------------------------------------------------------------------

    def register_webhook(
        self, name: str, url: str, events: list[tuple[str, str]], secret: str
    ) -> str:
        """Make exactly one webhook called `name`, with this url, events and secret.

        Reconciled by name: list, then update the one found or create one. A create is never
        retried blindly (it is not idempotent: a retry after a lost answer makes a second
        webhook); after a create whose answer was lost the list is read again before another
        create. Webhooks that already share the name are our own duplicates (an earlier blind
        retry, two registrations racing): the oldest is kept and updated, the others deleted,
        so every run converges on one and the promoter is not woken twice per event.

        Returns what was done, e.g. "created", "updated", "updated; deleted 1 duplicate (id)".
        """
        from mlflow.entities.webhook import WebhookAction, WebhookEntity, WebhookEvent

        wanted: list[WebhookEvent | WebhookEventStr] = [
            WebhookEvent(WebhookEntity(entity.lower()), WebhookAction(action.lower()))
            for entity, action in events
        ]
        attempts = self.attempts or DEFAULT_ATTEMPTS
        named = self._webhooks_named(name)
        created_id = ""
        creates = 0
        while not named:
            creates += 1
            try:
                created_id = self._create_webhook(name, url, wanted, secret)
            except _AnswerLost as lost:
                if creates >= attempts:
                    raise RegistryError(
                        f"MLflow at {self.base_url}: creating webhook {name!r} lost its answer "
                        f"{creates} times and it is still not listed: {lost}"
                    ) from lost
            # Read back even after a clean create: a registration racing this one shows here.
            named = self._webhooks_named(name)
        keep, *extras = sorted(
            named, key=lambda webhook: (webhook.creation_timestamp, webhook.webhook_id)
        )
        done = "created" if creates else "updated"
        if keep.webhook_id != created_id:
            self._call(
                f"updating webhook {name!r} ({keep.webhook_id})",
                lambda client: client.update_webhook(
                    keep.webhook_id,
                    name=name,
                    url=url,
                    events=wanted,
                    secret=secret,
                    status="ACTIVE",
                ),
                missing=lambda _error: False,
            )
        for extra in extras:
            # Already gone (another registration removed it) is the state wanted.
            self._call(
                f"deleting duplicate webhook {name!r} ({extra.webhook_id})",
                partial(_delete_webhook, webhook_id=extra.webhook_id),
            )
        if extras:
            ids = ", ".join(extra.webhook_id for extra in extras)
            plural = "s" if len(extras) > 1 else ""
            done += f"; deleted {len(extras)} duplicate{plural} ({ids})"
        return done

    def _webhooks_named(self, name: str) -> list[Webhook]:
        found: list[Webhook] = []
        page_token: str | None = None
        while True:
            page = self._call(
                "listing webhooks (MLflow 3.3+ with a SQL backend has them)",
                partial(_list_webhooks, page_token=page_token),
                missing=lambda _error: False,
            )
            if page is None:  # unreachable: nothing is "missing" here
                raise RegistryError(f"MLflow at {self.base_url} answered no webhook list")
            found += [webhook for webhook in page if webhook.name == name]
            page_token = page.token or None
            if not page_token:
                return found

    def _create_webhook(
        self, name: str, url: str, events: list[WebhookEvent | WebhookEventStr], secret: str
    ) -> str:
        """The new webhook's id; `_AnswerLost` when MLflow may or may not have created it."""
        from mlflow.exceptions import MlflowException

        try:
            # One attempt: MLflow's client would otherwise retry this POST after a timeout.
            created = self._call(
                f"creating webhook {name!r}",
                lambda client: client.create_webhook(
                    name=name,
                    url=url,
                    events=events,
                    secret=secret,
                    status="ACTIVE",
                    description="managed by `mlopsctl webhook register`",
                ),
                missing=lambda _error: False,
                attempts=1,
            )
        except RegistryError as error:
            cause = error.__cause__
            if isinstance(cause, MlflowException) and (
                _transport_failure(cause) is not None or _http_status(cause) >= 500
            ):
                raise _AnswerLost(str(error)) from error
            raise  # a 4xx is MLflow's considered refusal: nothing was created
        return str(getattr(created, "webhook_id", "") or "")

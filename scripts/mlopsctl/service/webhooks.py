"""MLflow webhook deliveries: verifying and reading them. Pure apart from the replay memory.

MLflow signs `f"{delivery_id}.{timestamp}.{raw_body}"` with HMAC-SHA256 and sends
`X-MLflow-Signature: v1,<base64>`, `X-MLflow-Timestamp` (unix seconds) and
`X-MLflow-Delivery-Id`. The signature is checked against the raw bytes, before any parsing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
HEADERS = (SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER)
MAX_BODY_BYTES = 64 * 1024
WINDOW_SECONDS = 300
# Unix seconds have 10 digits until the year 2286; 12 leaves room and keeps int() cheap.
MAX_TIMESTAMP_DIGITS = 12
# Events that can move what a pin should be; the rest are accepted and ignored.
RELEVANT_EVENTS = frozenset(
    {
        ("model_version_alias", "created"),  # also sent when an alias moves
        ("model_version_alias", "deleted"),
        ("model_version", "created"),
    }
)


@dataclass(frozen=True)
class Verdict:
    """What to answer: HTTP status, a result label (for metrics), and the event if any."""

    status: int
    result: str
    message: str
    event: tuple[str, str] | None = None
    model: str | None = None

    @property
    def event_name(self) -> str:
        """The event as MLflow names it (`model_version_alias.created`), or "" for none."""
        return ".".join(self.event) if self.event else ""


class ReplayMemory:
    """Delivery ids seen within the time window, so a replayed delivery is dropped."""

    def __init__(self, window_seconds: float = WINDOW_SECONDS, capacity: int = 100_000) -> None:
        self.window_seconds = window_seconds
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, now: float) -> bool:
        with self._lock:
            # Ids older than twice the window cannot come back: their timestamps would be stale.
            while self._seen and (
                next(iter(self._seen.values())) < now - 2 * self.window_seconds
                or len(self._seen) >= self.capacity
            ):
                self._seen.popitem(last=False)
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            return True


def is_ascii_number(text: str, max_digits: int) -> bool:
    """Whether `text` is 1 to `max_digits` of the digits 0-9. str.isdigit() alone also takes
    "²" (which int() refuses) and Arabic-Indic digits (which int() reads); and int() refuses
    strings over 4300 digits."""
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    replays: ReplayMemory,
    now: Callable[[], float] = time.time,
) -> Verdict:
    delivery_id = headers.get(DELIVERY_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    sent_signature = headers.get(SIGNATURE_HEADER, "")
    if not delivery_id or not timestamp or not sent_signature:
        missing = [
            name
            for name, value in (
                (DELIVERY_HEADER, delivery_id),
                (TIMESTAMP_HEADER, timestamp),
                (SIGNATURE_HEADER, sent_signature),
            )
            if not value
        ]
        return Verdict(400, "malformed", f"missing header {', '.join(missing)}")
    # MLflow sends a UUID: anything else (non-ASCII, control characters) is not MLflow's.
    if len(delivery_id) > 200 or not (delivery_id.isascii() and delivery_id.isprintable()):
        return Verdict(
            400, "malformed", f"{DELIVERY_HEADER} must be printable ASCII, 200 characters at most"
        )
    if not is_ascii_number(timestamp, MAX_TIMESTAMP_DIGITS):
        return Verdict(400, "malformed", f"{TIMESTAMP_HEADER} must be unix seconds in digits 0-9")
    expected = signature(secret, delivery_id, timestamp, body)
    # compare_digest raises on non-ASCII strings; such a signature cannot be ours anyway.
    if not sent_signature.isascii() or not hmac.compare_digest(expected, sent_signature):
        return Verdict(401, "bad_signature", "the signature does not match the body")
    current = now()
    if abs(current - int(timestamp)) > WINDOW_SECONDS:
        return Verdict(401, "stale", f"timestamp is outside the {WINDOW_SECONDS} s window")
    if not replays.first_time(delivery_id, current):
        return Verdict(200, "duplicate", "delivery already received")
    try:
        payload = json.loads(body)
        entity, action = str(payload["entity"]), str(payload["action"])
        data = payload.get("data") or {}
        model = data.get("name") if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return Verdict(400, "malformed", "the body is not an MLflow webhook payload")
    event = (entity.lower(), action.lower())
    if event not in RELEVANT_EVENTS:
        return Verdict(202, "ignored", f"event {entity}.{action} does not move pins", event)
    return Verdict(202, "accepted", "queued", event, str(model) if model else None)

"""What the frontend does, apart from drawing: ask the model server, read its answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

FEATURES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
DEFAULTS = (5.9, 3.0, 4.3, 1.3)
CLASS_NAMES = ("setosa", "versicolor", "virginica")
TIMEOUT_SECONDS = 10
# MLflow numbers versions from 1: a pin of version 0 records that nothing was promoted yet.
NOTHING_PROMOTED = "0"
# What the model server's placeholder answers /invocations with while nothing is promoted.
NO_MODEL_PROMOTED = "NO_MODEL_PROMOTED"


class ModelServerError(Exception):
    """The model server could not be reached, or answered something unusable."""


class NoModelPromoted(ModelServerError):
    """The model server is up, but no version has been promoted to this environment yet."""


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


def model_identity(model_uri: str) -> tuple[str, str]:
    """("iris-classifier", "7") from models:/iris-classifier/7; unknowns when it is not one."""
    name, _, version = model_uri.removeprefix("models:/").partition("/")
    if not model_uri.startswith("models:/") or not name or not version:
        return "unknown model", "unknown version"
    return name, version


def no_model_message(name: str) -> str:
    """What the page says while no version of `name` is promoted to this environment."""
    return (
        f"No model is served in this environment yet: no version of {name} has been promoted "
        "here. A version gets here by promotion: train one (the trainer registers it in "
        "MLflow), then move the alias this environment follows to it; the promoter pins it in "
        "Git and the model server starts serving it."
    )


def _is_no_model_promoted(status: int, detail: str) -> bool:
    if status != 503:
        return False
    try:
        answer = json.loads(detail)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("error_code") == NO_MODEL_PROMOTED


def predict(server_url: str, measurements: list[float]) -> Prediction:
    body = json.dumps({"dataframe_split": {"columns": list(FEATURES), "data": [measurements]}})
    request = urllib.request.Request(
        f"{server_url.rstrip('/')}/invocations",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = error.read(65536).decode("utf-8", "replace")
        if _is_no_model_promoted(error.code, detail):
            raise NoModelPromoted(detail) from error
        detail = detail[:300]
        raise ModelServerError(f"the model server answered HTTP {error.code}: {detail}") from error
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise ModelServerError(
            f"the model server at {server_url} is not reachable: {reason}"
        ) from error
    except ValueError as error:
        raise ModelServerError("the model server answered something that is not JSON") from error
    try:
        row = [float(value) for value in answer["predictions"][0]]
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ModelServerError(
            f"unexpected answer from the model server: {str(answer)[:200]}"
        ) from error
    if len(row) != len(CLASS_NAMES):
        raise ModelServerError(f"expected {len(CLASS_NAMES)} class probabilities, got {len(row)}")
    probabilities = dict(zip(CLASS_NAMES, row, strict=True))
    return Prediction(max(probabilities, key=probabilities.__getitem__), probabilities)

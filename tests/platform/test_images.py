"""The images' build contexts: Dockerfiles lint clean and the Python in them is tested as code.

There is no Docker engine here; the GitHub workflows build the images. What can be checked
here is checked: hadolint, exact base images, a non-root user, and pinned requirements that
match the versions the tests run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.loopback import QuietHandler, serving
from tests.support.paths import REPOSITORY

IMAGES = sorted(path.parent.name for path in (REPOSITORY / "images").glob("*/Dockerfile"))
CONSTRAINTS = {
    line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
    for line in (REPOSITORY / "requirements/constraints.txt").read_text().splitlines()
    if "==" in line and not line.startswith("#")
}


def test_every_image_the_platform_runs_has_a_build_context():
    assert IMAGES == ["mlflow-server", "model-server", "promoter", "streamlit", "trainer"]


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_passes_hadolint(image: str):
    hadolint = Path(sys.executable).parent / "hadolint"
    completed = subprocess.run(
        [str(hadolint), "--no-color", str(REPOSITORY / "images" / image / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (completed.returncode, completed.stdout) == (0, ""), completed.stdout


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_pins_its_base_and_runs_as_non_root(image: str):
    text = (REPOSITORY / "images" / image / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert bases and all(re.search(r":\d+\.\d+\.\d+[\w.-]*$|@sha256:", base) for base in bases)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


@pytest.mark.parametrize(
    "image", [i for i in IMAGES if (REPOSITORY / "images" / i / "requirements.txt").exists()]
)
def test_requirements_are_exact_and_what_the_tests_run(image: str):
    for line in (REPOSITORY / "images" / image / "requirements.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, version = line.partition("==")
        assert version, f"{image}: {line!r} is not pinned exactly"
        package = re.sub(r"\[.*\]", "", name).lower()
        if package in CONSTRAINTS:
            assert CONSTRAINTS[package] == version, f"{image}: {package} {version} is not tested"


def test_the_trainer_refuses_bad_arguments_with_a_reason():
    for arguments, message in (
        ([], "no MLflow server"),
        (["--tracking-uri", "http://127.0.0.1:9", "--regularisation", "1,x"], "is not a list"),
        (["--tracking-uri", "http://127.0.0.1:9", "--regularisation", "0"], "must be positive"),
    ):
        completed = subprocess.run(
            [sys.executable, str(REPOSITORY / "images/trainer/train.py"), *arguments],
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert completed.returncode == 2
        assert message in completed.stderr


@pytest.fixture
def odd_model_server() -> Iterator[str]:
    """Answers /invocations with whatever the path asks for: not JSON, two classes, or a 503."""

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            if self.path.startswith("/busy"):
                busy = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}
                self.reply(503, json.dumps(busy).encode())
                return
            odd = json.dumps({"predictions": [[0.5, 0.5]]}).encode()
            self.reply(200, b"<html>oops</html>" if self.path.startswith("/html") else odd)

    with serving(Handler) as url:
        yield url


def test_the_frontend_reads_only_answers_it_understands(odd_model_server: str):
    sys.path.insert(0, str(REPOSITORY / "images/streamlit"))
    try:
        import frontend
    finally:
        sys.path.pop(0)
    with pytest.raises(frontend.ModelServerError, match="not JSON"):
        frontend.predict(f"{odd_model_server}/html", [5.0, 3.0, 4.0, 1.0])
    with pytest.raises(frontend.ModelServerError, match="expected 3 class probabilities, got 2"):
        frontend.predict(odd_model_server, [5.0, 3.0, 4.0, 1.0])
    # A 503 for another reason is an error, not "nothing promoted yet".
    with pytest.raises(frontend.ModelServerError, match="answered HTTP 503") as raised:
        frontend.predict(f"{odd_model_server}/busy", [5.0, 3.0, 4.0, 1.0])
    assert not isinstance(raised.value, frontend.NoModelPromoted)
    assert frontend.model_identity("models:/iris-classifier/7") == ("iris-classifier", "7")
    assert frontend.model_identity("runs:/abc/model") == ("unknown model", "unknown version")

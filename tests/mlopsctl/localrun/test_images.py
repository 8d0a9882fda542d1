"""Image directories built from Dockerfiles: what they hold, that the cache reuses them, that a
changed input builds anew, and that a failed or unfinished build is never used.

The last test builds every image of the platform into the default cache, as `make test` does:
slow the first time on a machine, then served from the cache.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import posixpath
import re
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlopsctl.base import toolchain
from mlopsctl.base.config import ImageBuild, load_config
from mlopsctl.base.errors import LocalRunError
from mlopsctl.localrun.dockerfile import PipStep
from mlopsctl.localrun.images import (
    CACHE_VARIABLE,
    KEPT_BUILDS_PER_IMAGE,
    MARKER,
    PIP_CACHE,
    PIP_RUNNERS,
    BuiltImage,
    build_image,
    default_cache_dir,
)
from tests.support.paths import REPOSITORY

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

DOCKERFILE = f"""\
# A small image: one tiny pure-Python package, a directory of application files, a user.
FROM python:{PYTHON}-slim
ENV PIP_NO_CACHE_DIR=1 GREETING="hello world"
WORKDIR /srv
COPY requirements.txt .
# An absolute path names the image's file: here the one under rootfs.
RUN pip install --no-compile -r /srv/requirements.txt
COPY app/ ./app/
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin app
USER 10001
ENTRYPOINT ["python", "/srv/app/main.py"]
"""

MAIN = """\
import os
import six
print(six.__version__, os.environ["GREETING"])
"""


@dataclass
class Context:
    repository: Path
    build: ImageBuild

    @property
    def directory(self) -> Path:
        return self.repository / self.build.context

    def write(self, relative: str, text: str) -> None:
        path = self.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def context(tmp_path: Path) -> Context:
    repository = tmp_path / "repository"
    made = Context(
        repository,
        ImageBuild("registry.test/team/six-app", "images/six-app", "images/six-app/Dockerfile"),
    )
    made.write("Dockerfile", DOCKERFILE)
    made.write("requirements.txt", "six==1.17.0\n")
    made.write("app/main.py", MAIN)
    made.write("app/data/table.csv", "a,b\n1,2\n")
    made.write("app/__pycache__/main.cpython-311.pyc", "left out by .dockerignore")
    made.write(".dockerignore", "**/__pycache__\n")
    (made.directory / "app" / "empty").mkdir()
    return made


def build(context: Context, cache: Path, logs: list[str] | None = None) -> BuiltImage:
    return build_image(
        context.repository, context.build, cache, (logs if logs is not None else []).append
    )


def tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def image_directories(cache: Path) -> list[str]:
    return sorted(path.name for path in cache.iterdir() if not path.name.startswith("."))


def test_an_image_directory_holds_the_venv_the_copied_files_and_the_user(
    context: Context, tmp_path: Path
):
    cache = tmp_path / "cache"
    before = tree(context.repository)
    image = build(context, cache)

    assert image.directory == cache / f"six-app-{image.key[:16]}"
    assert image.short_name == "six-app"
    assert image.copied_files == ("requirements.txt", "app/main.py", "app/data/table.csv")
    # The COPYed files at their image paths, without what .dockerignore leaves out.
    assert tree(image.rootfs) == {
        "srv/requirements.txt": b"six==1.17.0\n",
        "srv/app/main.py": MAIN.encode(),
        "srv/app/data/table.csv": b"a,b\n1,2\n",
    }
    # Docker copies empty directories too.
    assert (image.rootfs / "srv/app/empty").is_dir()
    assert not (image.rootfs / "srv/app/__pycache__").exists()
    assert image.passwd_lines == ("app:x:10001:10001::/home/app:/usr/sbin/nologin",)
    assert image.group_lines == ("app:x:10001:",)
    assert image.recipe.entrypoint == ("python", "/srv/app/main.py")
    # The image's ENV as a container sees it: PIP_NO_CACHE_DIR stays (only the build drops it).
    assert image.environment["PIP_NO_CACHE_DIR"] == "1"
    assert image.environment["GREETING"] == "hello world"
    assert image.environment["PATH"] == (
        f"{image.venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )
    # The venv's python links into the base interpreter's prefix, which a container must see.
    assert (image.venv / "bin" / "python").resolve().is_relative_to(image.python_prefix)
    # No system site packages: what this test's own environment has (PyYAML) is not there.
    assert not (image.venv / "lib" / f"python{PYTHON}" / "site-packages" / "yaml").exists()

    # The image's software runs from the venv, with the image's environment.
    completed = subprocess.run(
        ["python", str(image.rootfs / "srv/app/main.py")],
        env=image.environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (completed.returncode, completed.stdout) == (0, "1.17.0 hello world\n"), completed.stderr

    # Containers run as uid 10001: everything is readable, directories and programs enterable.
    for path in [image.directory, *image.directory.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        assert mode & stat.S_IROTH, path
        if stat.S_ISDIR(mode) or mode & stat.S_IXUSR:
            assert mode & stat.S_IXOTH, path

    # Nothing outside the cache directory was written.
    assert tree(context.repository) == before
    assert {path.name for path in cache.iterdir()} <= {
        image.directory.name,
        ".locks",
        PIP_CACHE,
        PIP_RUNNERS,
    }


def test_pip_is_installed_once_per_interpreter_and_into_no_image(context: Context, tmp_path: Path):
    cache = tmp_path / "cache"
    logs: list[str] = []
    first = build(context, cache, logs)
    context.write("app/data/table.csv", "a,b\n9,9\n")
    second = build(context, cache, logs)
    assert first.directory != second.directory
    assert sum(line.startswith("installing pip for python") for line in logs) == 1
    # An image's virtualenv holds what its Dockerfile installs (six), and no pip.
    for image in (first, second):
        assert set(_installed(image)) == {"six"}
        assert not (image.venv / "bin" / "pip").exists()


def test_the_same_inputs_reuse_the_directory_and_a_changed_file_builds_a_new_one(
    context: Context, tmp_path: Path
):
    cache = tmp_path / "cache"
    first_logs: list[str] = []
    first = build(context, cache, first_logs)
    assert any("building from images/six-app/Dockerfile" in line for line in first_logs)
    marker = (first.directory / MARKER).stat()

    again_logs: list[str] = []
    again = build(context, cache, again_logs)
    assert again.directory == first.directory and again.key == first.key
    assert again_logs == [f"six-app: using the cached image in {first.directory}"]
    after = (first.directory / MARKER).stat()
    assert (after.st_ino, after.st_mtime_ns) == (marker.st_ino, marker.st_mtime_ns)

    # A file .dockerignore leaves out is not an input.
    context.write("app/__pycache__/main.cpython-311.pyc", "changed, still left out")
    assert build(context, cache).key == first.key

    context.write("app/data/table.csv", "a,b\n3,4\n")
    changed = build(context, cache)
    assert changed.key != first.key
    assert (changed.rootfs / "srv/app/data/table.csv").read_text() == "a,b\n3,4\n"
    # The old directory stays: another run may still be using it.
    assert image_directories(cache) == sorted([first.directory.name, changed.directory.name])

    context.write("Dockerfile", DOCKERFILE.replace("hello world", "hello again"))
    assert build(context, cache).key not in (first.key, changed.key)


def test_the_cache_keeps_the_most_recently_used_builds_of_an_image(
    context: Context, tmp_path: Path
):
    cache = tmp_path / "cache"
    builds = []
    for number in range(KEPT_BUILDS_PER_IMAGE):
        context.write("app/data/table.csv", f"a,b\n{number},0\n")
        builds.append(build(context, cache))
    # Using the oldest again makes it recent: the next new build removes the second instead.
    context.write("app/data/table.csv", "a,b\n0,0\n")
    assert build(context, cache).directory == builds[0].directory
    context.write("app/data/table.csv", "a,b\nnew,0\n")
    logs: list[str] = []
    newest = build(context, cache, logs)
    kept = [builds[0], *builds[2:], newest]
    assert image_directories(cache) == sorted(image.directory.name for image in kept)
    assert f"six-app: removed the unused build {builds[1].directory.name}" in logs
    # A build another run holds the lock of (it is building it) is never removed.
    lock = cache / ".locks" / f"{builds[2].directory.name}.lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        for number in range(2):
            context.write("app/data/table.csv", f"a,b\nlater{number},0\n")
            build(context, cache)
        assert builds[2].directory.is_dir()
    assert not builds[0].directory.exists()


def test_a_directory_without_its_marker_is_rebuilt(context: Context, tmp_path: Path):
    cache = tmp_path / "cache"
    first = build(context, cache)
    # What a build killed half-way leaves: files, and no marker.
    (first.directory / MARKER).unlink()
    (first.venv / "bin" / "python").unlink()
    logs: list[str] = []
    rebuilt = build(context, cache, logs)
    assert rebuilt.directory == first.directory
    assert any("an unfinished build" in line for line in logs)
    assert (rebuilt.directory / MARKER).is_file()
    assert (rebuilt.venv / "bin" / "python").exists()


def test_concurrent_builds_of_one_image_build_it_once(context: Context, tmp_path: Path):
    cache = tmp_path / "cache"
    logs: list[str] = []
    results: list[BuiltImage | BaseException] = []

    def run() -> None:
        try:
            results.append(build_image(context.repository, context.build, cache, logs.append))
        except BaseException as error:
            results.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert len(results) == 2 and all(isinstance(result, BuiltImage) for result in results)
    assert sum("building from" in line for line in logs) == 1
    assert sum("using the cached image" in line for line in logs) == 1


def test_a_failed_build_leaves_nothing_behind(context: Context, tmp_path: Path):
    cache = tmp_path / "cache"
    context.write("Dockerfile", DOCKERFILE.replace("-r /srv/requirements.txt", "./not-a-project"))
    with pytest.raises(LocalRunError) as caught:
        build(context, cache)
    message = str(caught.value)
    assert message.startswith(
        "images/six-app/Dockerfile:7: pip install --no-compile ./not-a-project: failed"
    )
    assert "not-a-project" in message.splitlines()[-1]
    assert image_directories(cache) == []


def test_inputs_that_cannot_be_built_are_refused_before_building(context: Context, tmp_path: Path):
    cache = tmp_path / "cache"
    for dockerfile, message in (
        (
            DOCKERFILE.replace("COPY app/ ./app/", "COPY nothing.txt ./"),
            "images/six-app/Dockerfile:8: COPY nothing.txt: not found in the build context",
        ),
        (
            DOCKERFILE.replace("COPY app/ ./app/", "COPY app/__pycache__ ./"),
            "images/six-app/Dockerfile:8: COPY app/__pycache__: not found in the build context",
        ),
        (
            DOCKERFILE.replace(f"python:{PYTHON}-slim", "python:3.99-slim"),
            "images/six-app/Dockerfile: FROM python:3.99-slim needs Python 3.99",
        ),
        (
            DOCKERFILE.replace(
                "COPY app/ ./app/", "RUN apt-get install -y no-such-package-here=1.0"
            ),
            "images/six-app/Dockerfile:8: the image installs the Debian package "
            "no-such-package-here, which is not installed on this machine",
        ),
    ):
        context.write("Dockerfile", dockerfile)
        with pytest.raises(LocalRunError) as caught:
            build(context, cache)
        assert message in str(caught.value)
    context.write("Dockerfile", DOCKERFILE)
    (context.directory / "app" / "link.py").symlink_to("main.py")
    with pytest.raises(LocalRunError, match=r"Dockerfile:8: COPY: app/link.py is not a regular"):
        build(context, cache)
    assert not cache.exists() or image_directories(cache) == []


def test_apt_packages_of_another_version_are_a_warning_and_path_names_the_venv(
    context: Context, tmp_path: Path
):
    context.write(
        "Dockerfile",
        f"FROM python:{PYTHON}-slim\n"
        "ENV PATH=/opt/tools/bin:$PATH\n"
        "RUN apt-get update && apt-get install -y ca-certificates=0.0-not-this-one \\\n"
        "    && rm -rf /var/lib/apt/lists/*\n",
    )
    image = build(context, tmp_path / "cache")
    assert any(
        warning.startswith(
            "images/six-app/Dockerfile:3: the image installs ca-certificates=0.0-not-this-one; "
            "this machine has "
        )
        for warning in image.warnings
    ), image.warnings
    # The python image's /usr/local/bin (its interpreter and pip's scripts) is the venv here.
    venv_bin = f"{image.venv}/bin"
    assert image.environment["PATH"] == (
        f"/opt/tools/bin:{venv_bin}:/usr/local/sbin:{venv_bin}:/usr/sbin:/usr/bin:/sbin:/bin"
    )


def test_mlopsctl_tools_install_needs_mlopsctl_in_the_image(context: Context, tmp_path: Path):
    context.write(
        "Dockerfile",
        f"FROM python:{PYTHON}-slim\nENV MLOPSCTL_TOOLS_DIR=/opt/tools\n"
        "RUN mlopsctl tools install\n",
    )
    with pytest.raises(LocalRunError, match=r"Dockerfile:3: mlopsctl tools install, but no pip"):
        build(context, tmp_path / "cache")
    assert image_directories(tmp_path / "cache") == []


def test_the_default_cache_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "chosen"))
    assert default_cache_dir() == tmp_path / "chosen"
    monkeypatch.delenv(CACHE_VARIABLE)
    if os.geteuid() == 0:
        assert default_cache_dir() == Path("/var/cache/mlopsctl/images")
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert default_cache_dir() == tmp_path / "xdg" / "mlopsctl" / "images"


# What each image's entry point imports, run in its built venv: a missing requirement shows here
# rather than as a crash at a container's start.
# MLflow starts its usage reports at import unless the image's ENV says not to; a workload of
# the platform must not call out.
NO_USAGE_REPORTS = [
    "python",
    "-c",
    "import mlflow\n"
    "from mlflow.telemetry.client import get_telemetry_client\n"
    "assert get_telemetry_client() is None, 'MLflow would send usage reports'",
]
IMAGE_CHECKS: dict[str, list[list[str]]] = {
    "trainer": [
        ["python", "-c", "import mlflow.sklearn, skops.io, sklearn, pandas"],
        NO_USAGE_REPORTS,
    ],
    "mlflow-server": [
        ["mlflow", "server", "--help"],
        # The Deployment passes --expose-prometheus, which imports it.
        ["python", "-c", "import prometheus_flask_exporter, psycopg"],
        NO_USAGE_REPORTS,
    ],
    "model-server": [["python", "-c", "import mlflow.pyfunc, sklearn, uvicorn"], NO_USAGE_REPORTS],
    "streamlit": [["streamlit", "version"]],
    "promoter": [["mlopsctl", "--version"]],
}


DEAD_PROXIES = {
    name: "http://127.0.0.1:9"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
}


def test_every_image_of_the_platform_builds_and_its_entry_point_imports(tmp_path: Path):
    config = load_config(REPOSITORY)
    assert sorted(build.name.rsplit("/", 1)[-1] for build in config.images) == sorted(IMAGE_CHECKS)
    images = [build_image(REPOSITORY, build, default_cache_dir()) for build in config.images]
    # The checks import large packages without bytecode (as the images do): run them at once.
    checks = [
        (
            image.short_name,
            command,
            subprocess.Popen(
                command,
                # Any request that leaves loopback goes to a dead port instead.
                env={**image.environment, "HOME": str(tmp_path), **DEAD_PROXIES},
                cwd=image.rootfs / image.recipe.workdir.lstrip("/"),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
        for image in images
        for command in IMAGE_CHECKS[image.short_name]
    ]
    failures = []
    for name, command, process in checks:
        try:
            output, _ = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        if process.returncode != 0:
            failures.append(f"{name}: {' '.join(command)}: exit {process.returncode}\n{output}")
    assert not failures, "\n".join(failures)

    (promoter,) = [image for image in images if image.short_name == "promoter"]
    tools = promoter.rootfs / "opt/mlopsctl/tools"
    assert promoter.environment["MLOPSCTL_TOOLS_DIR"] == "/opt/mlopsctl/tools"
    assert toolchain.installed_ok(tools)
    assert (tools / "bin" / "kubectl").stat().st_mode & stat.S_IXOTH


def _pinned(requirements: str) -> dict[str, str]:
    """name -> version of each `name==version` line (extras and comments left out)."""
    pins = {}
    for line in requirements.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version.strip()
    return pins


def _installed(image: BuiltImage) -> dict[str, str]:
    listed = subprocess.run(
        [
            str(image.venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in json.loads(listed.stdout).items()
    }


def test_each_image_virtualenv_is_installed_from_the_files_its_dockerfile_names():
    """The virtualenv the tests run an image's software in and the image itself cannot drift
    apart: the files each `pip install` of the Dockerfile names (-r, -c) are the repository's
    files, byte for byte, and every version they pin is the version installed."""
    config = load_config(REPOSITORY)
    for build in config.images:
        image = build_image(REPOSITORY, build, default_cache_dir())
        steps = [step for step in image.recipe.steps if isinstance(step, PipStep)]
        assert steps, f"{build.name}: its Dockerfile installs nothing with pip"
        installed = _installed(image)
        named = [
            posixpath.normpath(posixpath.join(step.workdir, argument))
            for step in steps
            for option, argument in itertools.pairwise(step.arguments)
            if option in ("-r", "--requirement", "-c", "--constraint")
        ]
        assert named, f"{build.name}: pip install names no requirements or constraints file"
        for path in named:
            in_image = (image.rootfs / path.lstrip("/")).read_bytes()
            sources = [
                REPOSITORY / build.context / relative
                for relative in image.copied_files
                if path.endswith(f"/{relative}")
            ]
            assert any(source.read_bytes() == in_image for source in sources), (build.name, path)
            constraints = any(
                option in ("-c", "--constraint") and path.endswith(argument)
                for step in steps
                for option, argument in itertools.pairwise(step.arguments)
            )
            for name, version in _pinned(in_image.decode()).items():
                if constraints and name not in installed:
                    continue  # a constraint limits what is installed, it installs nothing
                assert installed.get(name) == version, (build.name, path, name, version)
    # The promoter installs its package with the constraints, and no development extra.
    (promoter,) = [build for build in config.images if build.name.endswith("/promoter")]
    assert "pytest" not in _installed(build_image(REPOSITORY, promoter, default_cache_dir()))

"""Reading Dockerfiles: the platform's own, Docker's rules where they change what runs, and a
clear refusal, naming file and line, of everything the local run cannot replay."""

from __future__ import annotations

import pytest

from mlopsctl.base.errors import LocalRunError
from mlopsctl.localrun.dockerfile import (
    AptPackage,
    AptStep,
    CopyStep,
    ExposedPort,
    ImageRecipe,
    PipStep,
    ToolsStep,
    UserStep,
    parse_dockerfile,
    parse_dockerignore,
)
from tests.support.paths import REPOSITORY

PIP_ENVIRONMENT = (
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("PYTHONUNBUFFERED", "1"),
    ("PIP_NO_CACHE_DIR", "1"),
    ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
)
# The images that run MLflow also switch its usage reports off.
MLFLOW_ENVIRONMENT = (*PIP_ENVIRONMENT, ("MLFLOW_DISABLE_TELEMETRY", "true"))


def real(image: str) -> ImageRecipe:
    path = f"images/{image}/Dockerfile"
    return parse_dockerfile((REPOSITORY / path).read_text(), path)


def parse(text: str) -> ImageRecipe:
    return parse_dockerfile(text, "images/test/Dockerfile")


def refusal(text: str) -> str:
    with pytest.raises(LocalRunError) as caught:
        parse(text)
    return str(caught.value)


def steps_of(recipe: ImageRecipe, kind: type) -> list:  # type: ignore[type-arg]
    return [step for step in recipe.steps if isinstance(step, kind)]


def test_every_real_image_builds_on_python_3_11_as_user_10001():
    for image in ("mlflow-server", "model-server", "promoter", "streamlit", "trainer"):
        recipe = real(image)
        assert (recipe.base, recipe.python_version, recipe.python_release) == (
            "python:3.11.14-slim-bookworm",
            "3.11",
            "3.11.14",
        ), image
        assert recipe.user == "10001", image
        assert recipe.workdir == "/app", image
        (user,) = steps_of(recipe, UserStep)
        assert (user.uid, user.gid, user.shell) == (10001, 10001, "/usr/sbin/nologin")
        assert user.passwd_line == f"{user.name}:x:10001:10001::/home/{user.name}:/usr/sbin/nologin"
        assert user.group_line == f"{user.name}:x:10001:"


def test_the_mlflow_server_recipe():
    recipe = real("mlflow-server")
    assert recipe.entrypoint == ("mlflow",)
    assert recipe.cmd == ("server", "--host=0.0.0.0", "--port=5000")
    assert recipe.exposed_ports == (ExposedPort(5000, "tcp"),)
    assert recipe.env == MLFLOW_ENVIRONMENT
    assert recipe.copied_sources == ("requirements.txt",)
    copy, pip, user = recipe.steps
    assert copy == CopyStep(
        ("requirements.txt",), "/app", True, "images/mlflow-server/Dockerfile:10"
    )
    assert pip == PipStep(
        ("--no-compile", "-r", "requirements.txt"),
        "/app",
        MLFLOW_ENVIRONMENT,
        "images/mlflow-server/Dockerfile:11",
    )
    # The second command of the same RUN: the instruction's first line names both.
    assert isinstance(user, UserStep) and user.name == "mlflow"
    assert user.location == "images/mlflow-server/Dockerfile:11"


def test_the_model_server_recipe():
    recipe = real("model-server")
    assert recipe.entrypoint == ("python", "/app/serve.py")
    # The python image's CMD ("python3") is dropped by the ENTRYPOINT, as Docker drops it.
    assert recipe.cmd == ()
    assert recipe.exposed_ports == (ExposedPort(8080),)
    assert recipe.copied_sources == ("requirements.txt", "serve.py")
    (pip,) = steps_of(recipe, PipStep)
    assert pip.arguments == ("--no-compile", "-r", "requirements.txt")
    assert [type(step) for step in recipe.steps] == [CopyStep, PipStep, UserStep, CopyStep]


def test_the_streamlit_and_trainer_recipes():
    streamlit = real("streamlit")
    assert streamlit.entrypoint[:3] == ("streamlit", "run", "/app/app.py")
    assert "--server.port=8501" in streamlit.entrypoint
    assert streamlit.cmd == ()
    assert streamlit.copied_sources == ("requirements.txt", "app.py", "frontend.py")
    app_copy = steps_of(streamlit, CopyStep)[1]
    assert app_copy.image_path("app.py") == "/app/app.py"
    assert app_copy.image_path("frontend.py") == "/app/frontend.py"

    trainer = real("trainer")
    assert trainer.entrypoint == ("python", "/app/train.py")
    assert trainer.cmd == ()
    assert trainer.exposed_ports == ()
    assert trainer.copied_sources == ("requirements.txt", "train.py")
    assert [step.arguments for step in steps_of(trainer, PipStep)] == [
        ("--no-compile", "-r", "requirements.txt")
    ]


def test_the_promoter_recipe():
    recipe = real("promoter")
    assert recipe.entrypoint == ("mlopsctl",)
    assert recipe.cmd == ("serve",)
    assert recipe.environment["MLOPSCTL_TOOLS_DIR"] == "/opt/mlopsctl/tools"
    assert recipe.copied_sources == (
        "pyproject.toml",
        "README.md",
        "requirements/constraints.txt",
        "scripts/mlopsctl",
    )
    (apt,) = steps_of(recipe, AptStep)
    assert apt.packages == (
        AptPackage("git", "1:2.39.5-0+deb12u3"),
        AptPackage("ca-certificates", "20230311+deb12u1"),
    )
    assert apt.location == "images/promoter/Dockerfile:9"
    readme, constraints, package = steps_of(recipe, CopyStep)
    assert readme.image_path("README.md") == "/app/README.md"
    # A file onto a path that is no directory: it becomes that path.
    assert constraints.image_path("requirements/constraints.txt") == (
        "/app/requirements/constraints.txt"
    )
    # A directory source: its contents go to the destination.
    assert package.image_path("scripts/mlopsctl", "cli.py") == "/app/scripts/mlopsctl/cli.py"
    (pip,) = steps_of(recipe, PipStep)
    assert pip.arguments == ("--no-compile", "-c", "requirements/constraints.txt", ".")
    (tools,) = steps_of(recipe, ToolsStep)
    assert tools.resolved_tools_dir == "/opt/mlopsctl/tools"
    assert [type(step) for step in recipe.steps] == [
        AptStep,
        CopyStep,
        CopyStep,
        CopyStep,
        PipStep,
        ToolsStep,
        UserStep,
    ]


def test_continuations_comments_and_both_env_forms():
    recipe = parse(
        "# syntax=docker/dockerfile:1\n"
        "FROM python:3.12-slim AS app\n"
        "\n"
        "ENV A=1 \\\n"
        "    # a comment inside the instruction is dropped\n"
        "    B=\"two words\" C='single $A' \\\n"
        "\n"
        "    D=$A-${B}\n"
        "ENV LEGACY the rest of the line\n"
        "env A=2\n"
        "ENV E=${MISSING:-fallback} F=${A:+set} G=\\$A H=$B\n"
    )
    assert recipe.python_version == "3.12"
    assert recipe.env == (
        ("A", "1"),
        ("B", "two words"),
        ("C", "single $A"),
        # As in Docker, one ENV expands with the values from before it: A and B were unset.
        ("D", "-"),
        ("LEGACY", "the rest of the line"),
        ("A", "2"),
        ("E", "fallback"),
        ("F", "set"),
        ("G", "$A"),
        ("H", "two words"),
    )
    # Later wins; the python image's own variables come first.
    assert recipe.environment["A"] == "2"
    assert recipe.environment["LANG"] == "C.UTF-8"
    assert not recipe.sets_path


def test_workdir_and_copy_destinations_are_relative_to_the_previous_workdir():
    recipe = parse(
        "FROM python:3.11\n"
        "WORKDIR /srv\n"
        "WORKDIR app\n"
        "COPY requirements.txt .\n"
        "COPY setup.cfg config/settings.cfg\n"
        "COPY a.txt b.txt lib/\n"
        "COPY /data ../data\n"
        "COPY x.txt /srv/app\n"
        'COPY ["with space.txt", "/etc/"]\n'
    )
    assert recipe.workdir == "/srv/app"
    first, renamed, two, data, into_workdir, json_form = steps_of(recipe, CopyStep)
    assert first.image_path("requirements.txt") == "/srv/app/requirements.txt"
    assert renamed.image_path("setup.cfg") == "/srv/app/config/settings.cfg"
    assert two.image_path("a.txt") == "/srv/app/lib/a.txt"
    assert (data.sources, data.destination) == (("data",), "/srv/data")
    assert into_workdir.image_path("x.txt") == "/srv/app/x.txt"
    assert json_form.image_path("with space.txt") == "/etc/with space.txt"
    assert recipe.copied_sources == (
        "requirements.txt",
        "setup.cfg",
        "a.txt",
        "b.txt",
        "data",
        "x.txt",
        "with space.txt",
    )


def test_run_commands_the_local_run_replays():
    recipe = parse(
        "FROM python:3.11.9-slim\n"
        "ENV MLOPSCTL_TOOLS_DIR=/opt/tools\n"
        "WORKDIR /app\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends curl=7.88 tini \\\n"
        "    && rm -rf /var/lib/apt/lists/*\n"
        "RUN python -m pip install --no-cache-dir 'psycopg[binary]==3.3.9' \\\n"
        "    && pip3 install -e . && python3.11 -m pip install six==1.17.0\n"
        'RUN ["pip", "install", "uvicorn==0.54.0"]\n'
        "RUN mlopsctl tools install --tools-dir=bin/tools && mlopsctl tools install\n"
        "RUN useradd -u 20000 -g 100 -m -d /home/worker -c 'A worker' worker\n"
    )
    apt, *pips, custom_tools, default_tools, user = recipe.steps
    assert apt == AptStep(
        (AptPackage("curl", "7.88"), AptPackage("tini", None)), "images/test/Dockerfile:4"
    )
    assert [(pip.arguments, pip.workdir, pip.location) for pip in pips] == [
        (("--no-cache-dir", "psycopg[binary]==3.3.9"), "/app", "images/test/Dockerfile:6"),
        (("-e", "."), "/app", "images/test/Dockerfile:6"),
        (("six==1.17.0",), "/app", "images/test/Dockerfile:6"),
        (("uvicorn==0.54.0",), "/app", "images/test/Dockerfile:8"),
    ]
    assert custom_tools.resolved_tools_dir == "/app/bin/tools"
    assert default_tools.resolved_tools_dir == "/opt/tools"
    assert user.passwd_line == "worker:x:20000:100:A worker:/home/worker:/bin/sh"
    assert user.group_line is None and user.create_home


def test_entrypoint_and_cmd_as_docker_sets_them():
    assert parse("FROM python:3.11\n").cmd == ("python3",)
    shell = parse("FROM python:3.11\nENTRYPOINT exec gunicorn app:app\n")
    assert shell.entrypoint == ("/bin/sh", "-c", "exec gunicorn app:app")
    assert shell.cmd == ()
    # A CMD set by this Dockerfile survives a later ENTRYPOINT (only the base image's is dropped).
    kept = parse('FROM python:3.11\nCMD ["serve"]\nENTRYPOINT ["mlopsctl"]\n')
    assert (kept.entrypoint, kept.cmd) == (("mlopsctl",), ("serve",))
    shell_cmd = parse("FROM python:3.11\nCMD echo hi\n")
    assert shell_cmd.cmd == ("/bin/sh", "-c", "echo hi")
    assert parse("FROM python:3.11\nEXPOSE 80 53/udp\n").exposed_ports == (
        ExposedPort(80, "tcp"),
        ExposedPort(53, "udp"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM python:3.11\nARG VERSION=1\n", "images/test/Dockerfile:2: the local run cannot "),
        ("FROM python:3.11\n\nADD x.tgz /\n", "images/test/Dockerfile:3: the local run cannot "),
        ("FROM python:3.11\nLABEL a=b\n", "images/test/Dockerfile:2: the local run cannot "),
        ("ENV A=1\nFROM python:3.11\n", "images/test/Dockerfile:1: ENV before FROM"),
        ("FROM debian:bookworm\n", "images/test/Dockerfile:1: FROM debian:bookworm: the local"),
        ("FROM python:latest\n", "images/test/Dockerfile:1: FROM python:latest"),
        ("FROM python:3.11\nFROM python:3.11\n", "images/test/Dockerfile:2: a second FROM"),
        ("FROM --platform=linux/arm64 python:3.11\n", "Dockerfile:1: FROM --platform"),
        (
            "FROM python:3.11\nCOPY --chown=10001 app.py /app/\n",
            "images/test/Dockerfile:2: COPY --chown: the local run cannot honour this flag",
        ),
        (
            "FROM python:3.11\nCOPY --from=builder /wheels /wheels\n",
            "images/test/Dockerfile:2: COPY --from: the local run cannot honour this flag",
        ),
        (
            "FROM python:3.11\nCOPY a.txt b.txt /app\n",
            "images/test/Dockerfile:2: COPY with more than one source needs a directory",
        ),
        ("FROM python:3.11\nCOPY ../secret /app/\n", "Dockerfile:2: COPY ../secret: outside"),
        (
            "FROM python:3.11\nRUN pip install x \\\n  && curl -o /x https://example.test/x\n",
            "images/test/Dockerfile:2: the local run cannot replay this RUN command: "
            "curl -o /x https://example.test/x",
        ),
        (
            "FROM python:3.11\nRUN pip install x; echo done\n",
            "images/test/Dockerfile:2: the local run cannot replay this RUN command: "
            "pip install x; echo done (the shell operator ';')",
        ),
        (
            "FROM python:3.11\nRUN pip install $PACKAGE\n",
            "Dockerfile:2: the local run cannot replay this RUN command: pip install $PACKAGE "
            "(the shell expansion '$')",
        ),
        ("FROM python:3.11\nRUN pip install *.whl\n", "(the unquoted glob character '*')"),
        (
            "FROM python:3.11\nRUN pip install --target=/opt/lib six\n",
            "Dockerfile:2: the local run cannot replay this RUN command: pip install "
            "--target=/opt/lib six (--target installs outside the image's Python environment)",
        ),
        ("FROM python:3.11\nRUN pip download x\n", "cannot replay this RUN command: pip down"),
        ("FROM python:3.11\nRUN apt-get upgrade\n", "cannot replay this RUN command: apt-get up"),
        ("FROM python:3.11\nRUN rm -rf /tmp/*\n", "cannot replay this RUN command"),
        ("FROM python:3.11\nRUN useradd app\n", "Dockerfile:2: useradd without a numeric --uid"),
        ("FROM python:3.11\nRUN useradd -u 1 -G adm a\n", "useradd -G: the local run cannot"),
        (
            "FROM python:3.11\nRUN apt-get install -y git=\n",
            "Dockerfile:2: apt-get install git=: expected NAME or NAME=VERSION",
        ),
        (
            "FROM python:3.11\nRUN mlopsctl tools install\n",
            "Dockerfile:2: mlopsctl tools install without --tools-dir or MLOPSCTL_TOOLS_DIR",
        ),
        (
            "FROM python:3.11\nUSER 10001\nRUN pip install six\n",
            "images/test/Dockerfile:3: RUN after USER 10001: the local run replays RUN as root",
        ),
        ("FROM python:3.11\nRUN --mount=type=cache pip install x\n", "RUN --mount: the local"),
        ("FROM python:3.11\nENV A\n", "images/test/Dockerfile:2: ENV A has no value"),
        ("FROM python:3.11\nENV A=1 B\n", "Dockerfile:2: ENV 'B': mixes `name=value` pairs"),
        ("FROM python:3.11\nENV X=${A/b/c}\n", "Dockerfile:2: ${A/b/c}: the local run expands"),
        ("FROM python:3.11\nEXPOSE 8000-8010\n", "Dockerfile:2: EXPOSE 8000-8010: expected"),
        ("# escape=`\nFROM python:3.11\n", "images/test/Dockerfile:1: the escape character"),
        ("# only a comment\n", "images/test/Dockerfile: no FROM instruction"),
    ],
)
def test_what_cannot_be_replayed_is_refused_naming_file_and_line(text: str, message: str):
    assert message in refusal(text)


def test_dockerignore_patterns_as_docker_reads_them():
    ignore = parse_dockerignore(
        "# comments and blank lines are skipped\n"
        "\n"
        "**/__pycache__\n"
        "*.pyc\n"
        "/build\n"
        "docs/*.md\n"
        "!docs/keep.md\n"
        "data/[a-c]?.csv\n",
        ".dockerignore",
    )
    assert ignore.excludes("scripts/mlopsctl/__pycache__/cli.cpython-311.pyc")
    assert ignore.excludes("__pycache__/x.pyc")
    assert ignore.excludes("top.pyc")
    # `*` stays within one directory level.
    assert not ignore.excludes("scripts/top.pyc")
    assert ignore.excludes("build/lib/module.py")
    assert ignore.excludes("docs/guide.md")
    assert not ignore.excludes("docs/keep.md")
    assert not ignore.excludes("docs/deep/guide.md")
    assert ignore.excludes("data/b1.csv")
    assert not ignore.excludes("data/d1.csv")
    assert not ignore.excludes("scripts/mlopsctl/cli.py")

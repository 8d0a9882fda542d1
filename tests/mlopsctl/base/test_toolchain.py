import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mlopsctl.base import toolchain
from mlopsctl.base.errors import ToolchainError
from mlopsctl.base.toolchain import WHEEL_FILENAME
from tests.support.paths import TOOLS_DIR

CACHED_WHEEL = TOOLS_DIR / "cache" / WHEEL_FILENAME


def test_the_machines_own_kubectl_is_never_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # A kubectl of another version on PATH must not change what renders.
    decoy = tmp_path / "kubectl"
    decoy.write_text("#!/bin/sh\nexit 99\n")
    decoy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    resolved = toolchain.resolve(TOOLS_DIR)
    assert resolved.kustomize_command == (str(TOOLS_DIR / "bin" / "kustomize"), "build")


def _pinned_wheel_tools_only(tmp_path: Path) -> Path:
    """A tools directory with the wheel's kubectl and helm, and no Go-built tools."""
    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    for name in ("kubectl", "helm"):
        (tools / "bin" / name).symlink_to(TOOLS_DIR / "bin" / name)
    return tools


def test_the_pinned_kustomize_comes_first_then_paths_then_kubectls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    # A standalone kustomize on PATH, here the pinned kubectl behind a `kustomize build` wrapper.
    wrapper = tmp_path / "kustomize"
    wrapper.write_text(f'#!/bin/sh\nshift\nexec "{TOOLS_DIR}/bin/kubectl" kustomize "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    resolved = toolchain.resolve(TOOLS_DIR)
    assert resolved.kustomize_command == (str(TOOLS_DIR / "bin" / "kustomize"), "build")
    assert resolved.kustomize_source == "pinned kustomize"
    assert resolved.kubeconform == str(TOOLS_DIR / "bin" / "kubeconform")
    without_go_tools = _pinned_wheel_tools_only(tmp_path)
    resolved = toolchain.resolve(without_go_tools)
    assert resolved.kustomize_command == (str(wrapper), "build")
    assert resolved.kustomize_source == "kustomize on PATH"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    resolved = toolchain.resolve(without_go_tools)
    assert resolved.kustomize_source == "pinned kubectl"
    assert resolved.kubeconform is None


def test_go_tools_are_verified_by_the_module_versions_in_the_binary(tmp_path: Path):
    go = shutil.which("go")
    assert go is not None, "Go is installed on the project's machines"
    [kustomize, _kubeconform, apiserver, etcd] = toolchain.GO_TOOLS
    for tool in toolchain.GO_TOOLS:
        assert toolchain.go_tool_problem(tool, TOOLS_DIR / "bin" / tool.name, go) is None
    # A binary of another tool, or no binary, is not taken for the pinned one.
    assert toolchain.go_tool_problem(kustomize, TOOLS_DIR / "bin" / "kubeconform", go) == (
        "not a Go build of sigs.k8s.io/kustomize/kustomize/v5 (no module info)"
    )
    assert toolchain.go_tool_problem(etcd, tmp_path / "etcd", go) == "missing"
    older = toolchain.GoTool(apiserver.name, apiserver.module, "v1.34.0", apiserver.package)
    assert toolchain.go_tool_problem(older, TOOLS_DIR / "bin" / "kube-apiserver", go) == (
        "built from k8s.io/kubernetes v1.35.4, not v1.34.0"
    )
    version = subprocess.run(
        [str(TOOLS_DIR / "bin" / "kube-apiserver"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == "Kubernetes v1.35.4"


def test_a_fresh_tools_directory_gets_the_go_tools_from_the_cache(tmp_path: Path):
    tools = _pinned_wheel_tools_only(tmp_path)
    lines = toolchain.install_go_tools(tools)
    assert [line.split(" into ")[0] for line in lines] == [
        f"{tool.name} {tool.version} copied from the cache" for tool in toolchain.GO_TOOLS
    ]
    assert toolchain.install_go_tools(tools) == [
        f"{tool.name} {tool.version} already installed in {tools / 'bin'}"
        for tool in toolchain.GO_TOOLS
    ]
    # A binary of the wrong version is replaced.
    shutil.copyfile(tools / "bin" / "kubeconform", tools / "bin" / "kustomize")
    [line, *_rest] = toolchain.install_go_tools(tools)
    assert line.startswith("kustomize v5.7.1 copied from the cache")


def test_no_kustomize_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError, match="mlopsctl tools install"):
        toolchain.resolve(tmp_path)

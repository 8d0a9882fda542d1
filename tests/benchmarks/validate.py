"""mlopsctl validate over every root, next to the raw kustomize loop; then `validate --server`
against the tests' real kube-apiserver, next to the plain validate.

Both are measured in this run on this machine, alternating, so the ratio compares like with
like. Target (issue 2): validate takes at most 1.3 times the raw loop.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlopsctl.base import kustomize, toolchain
from mlopsctl.base.config import load_config

REPOSITORY = Path(__file__).resolve().parents[2]
ROUNDS = 5
TARGET_RATIO = 1.3


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def raw_loop(kubectl: Path, roots: list[str]) -> float:
    started = time.perf_counter()
    for root in roots:
        subprocess.run(
            [str(kubectl), "kustomize", str(REPOSITORY / root)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return time.perf_counter() - started


def main() -> int:
    config = load_config(REPOSITORY)
    tools_dir = toolchain.default_tools_dir(REPOSITORY)
    roots = [
        root
        for root in kustomize.discover_roots(REPOSITORY, config.render_exclude)
        if not kustomize.network_needs(REPOSITORY / root)
    ]
    mlopsctl = Path(sys.executable).parent / "mlopsctl"
    validate_command = [str(mlopsctl), "validate", "--repo", str(REPOSITORY)]
    timed(validate_command)  # warm the page cache and Python's bytecode cache
    validate_times, loop_times = [], []
    for _ in range(ROUNDS):
        validate_times.append(timed(validate_command))
        loop_times.append(raw_loop(tools_dir / "bin" / "kubectl", roots))
    validate_median = statistics.median(validate_times)
    loop_median = statistics.median(loop_times)
    ratio = validate_median / loop_median
    print(f"roots rendered offline: {len(roots)}; rounds: {ROUNDS}")
    print(
        f"raw `kubectl kustomize` loop (serial): median {loop_median:.2f} s  "
        f"(min {min(loop_times):.2f}, max {max(loop_times):.2f})"
    )
    print(
        f"mlopsctl validate (render + checks):   median {validate_median:.2f} s  "
        f"(min {min(validate_times):.2f}, max {max(validate_times):.2f})"
    )
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(f"ratio validate / raw loop: {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)")
    server_against_plain(validate_command)
    return 0


def server_against_plain(validate_command: list[str]) -> None:
    from tests.support import kube_apiserver

    with tempfile.TemporaryDirectory(prefix="bench-kube-apiserver-") as scratch:
        started = time.perf_counter()
        server = kube_apiserver.start(Path(scratch))
        ready = time.perf_counter() - started
        try:
            server_command = [
                *validate_command,
                "--server",
                "--kubeconfig",
                str(server.kubeconfig),
                "--prepare-server",
            ]
            first = timed(server_command)  # installs the CRDs, creates the namespaces
            server_times, plain_times = [], []
            for _ in range(ROUNDS):
                server_times.append(timed(server_command))
                plain_times.append(timed(validate_command))
        finally:
            server.stop()
    server_median = statistics.median(server_times)
    plain_median = statistics.median(plain_times)
    print(f"test kube-apiserver + etcd ready in {ready:.1f} s")
    print(f"validate --server, first run (CRDs, namespaces): {first:.2f} s")
    print(
        f"validate --server: median {server_median:.2f} s; plain validate: median "
        f"{plain_median:.2f} s; ratio {server_median / plain_median:.2f}x"
    )


if __name__ == "__main__":
    sys.exit(main())

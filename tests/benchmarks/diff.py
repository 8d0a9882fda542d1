"""`mlopsctl diff` of a change that touches every kustomize root, next to two raw render loops.

The change adds an annotation to every root's kustomization, so every root renders differently
at the two revisions and every one must be rendered twice. The floor, measured in the same run
and alternating with it, is what any tool has to pay without parallelism: a serial `kubectl
kustomize` loop over the same roots at each revision. Target (issue 6): the whole repository
in at most 10 s here.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlopsctl.base import kustomize
from mlopsctl.base.config import load_config
from mlopsctl.base.toolchain import TOOLS_DIR_VARIABLE

REPOSITORY = Path(__file__).resolve().parents[2]
MLOPSCTL = str(Path(sys.executable).parent / "mlopsctl")
KUBECTL = str(REPOSITORY / ".tools" / "bin" / "kubectl")
ROUNDS = 5
TARGET_SECONDS = 10.0
ANNOTATION = 'commonAnnotations:\n  bench.mlopsctl.example/revision: "2"\n'


def git(directory: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=directory, check=True, capture_output=True, text=True
    ).stdout


def render_loop(tree: Path, roots: list[str]) -> float:
    started = time.perf_counter()
    for root in roots:
        subprocess.run([KUBECTL, "kustomize", str(tree / root)], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mlopsctl-bench-diff-") as scratch:
        base = Path(scratch) / "base"
        git(Path(scratch), "clone", "--quiet", str(REPOSITORY), str(base))
        config = load_config(base)
        roots = kustomize.discover_roots(base, config.render_exclude)
        offline = [root for root in roots if not kustomize.network_needs(base / root)]
        git(base, "checkout", "--quiet", "-b", "every-root")
        for root in roots:
            found = kustomize.kustomization_file(base / root)
            assert found is not None
            found.write_text(found.read_text().rstrip("\n") + "\n" + ANNOTATION)
        git(base, "-c", "user.name=b", "-c", "user.email=b@example.test", "commit", "-qam", "all")
        git(base, "checkout", "--quiet", "--detach", "HEAD~1")  # the loop's base tree
        head = Path(scratch) / "head"
        git(base, "worktree", "add", "--quiet", str(head), "every-root")

        command = [MLOPSCTL, "diff", "--repo", str(head), "--base", "HEAD~1", "--head", "HEAD"]
        command += ["--format", "json"]
        # The clone has no tools of its own: use this checkout's pinned ones.
        environment = {**os.environ, TOOLS_DIR_VARIABLE: str(REPOSITORY / ".tools")}
        first = subprocess.run(
            command, capture_output=True, text=True, check=False, env=environment
        )
        assert first.returncode == 1, first.stderr
        diff_times, loop_times = [], []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            completed = subprocess.run(
                command, capture_output=True, text=True, check=False, env=environment
            )
            diff_times.append(time.perf_counter() - started)
            assert completed.returncode == 1, completed.stderr
            loop_times.append(render_loop(base, offline) + render_loop(head, offline))
    report = json.loads(first.stdout)
    compared = sum(1 for root in report["roots"] if root["status"] == "changed")
    diff_median, loop_median = statistics.median(diff_times), statistics.median(loop_times)
    print(
        f"roots: {len(roots)} ({len(offline)} render offline, all changed; "
        f"{compared} compared resource by resource); rounds: {ROUNDS}"
    )
    print(
        f"two raw `kubectl kustomize` loops (serial): median {loop_median:.2f} s  "
        f"(min {min(loop_times):.2f}, max {max(loop_times):.2f})"
    )
    print(
        f"mlopsctl diff (worktrees, render, compare): median {diff_median:.2f} s  "
        f"(min {min(diff_times):.2f}, max {max(diff_times):.2f})"
    )
    verdict = "within" if diff_median <= TARGET_SECONDS else "OVER"
    print(
        f"ratio diff / raw loops: {diff_median / loop_median:.2f}x; "
        f"{verdict} the {TARGET_SECONDS:.0f} s target"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

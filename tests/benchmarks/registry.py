"""What MLflow's own client costs at start-up, next to the hand-written REST client it replaced.

`MlflowRegistry` now goes through `MlflowClient` (issue 11, point 19). Each sample is a fresh
Python process against a real MLflow server (sqlite), as a CLI run or a promoter start is:
import, then a first `version()` read, then warm reads. The baseline, measured in the same run
and alternating with it, is what the removed REST client paid for the same read: stdlib urllib
and json (plus PyYAML, which it imported for MLmodel) and one GET. A bare interpreter start is
the floor under both. Figures: medians over ROUNDS; peak RSS of the process after the reads.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.mlflow_fixtures import start_server, stop_server

ROUNDS = 7
WARM_READS = 20

_MEASURE = """
import json, sys, time
url, model, version, reads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
started = time.perf_counter()
{imports}
imported = time.perf_counter()
{read}
first = time.perf_counter()
for _ in range(reads):
    {read_again}
warm = (time.perf_counter() - first) / reads
print(json.dumps({{
    "import": imported - started,
    "first_call": first - imported,
    "warm_call": warm,
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
    "rss_mib": int(next(
        line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")
    )) / 1024,
}}))
"""

REST = _MEASURE.format(
    imports="import urllib.parse, urllib.request\nimport yaml",
    read=(
        "def read():\n"
        "    query = urllib.parse.urlencode({'name': model, 'version': version})\n"
        "    address = f'{url}/api/2.0/mlflow/model-versions/get?{query}'\n"
        "    with urllib.request.urlopen(address, timeout=10) as answer:\n"
        "        return json.loads(answer.read())['model_version']['status']\n"
        "assert read() == 'READY'"
    ),
    read_again="read()",
)

MLFLOW_CLIENT = _MEASURE.format(
    # The registry module imports MLflow lazily; importing it here splits the two costs.
    imports="from mlopsctl.base.registry import MlflowRegistry\nimport mlflow.tracking",
    read=(
        "registry = MlflowRegistry(url)\nassert registry.version(model, version).status == 'READY'"
    ),
    read_again="registry.version(model, version)",
)


def sample(program: str, *arguments: str) -> dict[str, float]:
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", program, *arguments],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    figures["process"] = time.perf_counter() - started
    return figures


def bare_start() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def median(samples: list[dict[str, float]], key: str) -> float:
    return statistics.median(figures[key] for figures in samples)


def main() -> int:
    logging.disable(logging.INFO)
    scratch = Path(tempfile.mkdtemp(prefix="mlopsctl-bench-registry-"))
    server = start_server(scratch, f"sqlite:///{scratch / 'mlflow.db'}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            version = server.register("bench-model", {"accuracy": 0.9})
        arguments = (server.url, "bench-model", version, str(WARM_READS))
        sample(REST, *arguments)  # warms the OS file cache for both
        sample(MLFLOW_CLIENT, *arguments)
        rest, client, floor = [], [], []
        for _ in range(ROUNDS):
            rest.append(sample(REST, *arguments))
            client.append(sample(MLFLOW_CLIENT, *arguments))
            floor.append(bare_start())
    finally:
        stop_server(server)
        shutil.rmtree(scratch, ignore_errors=True)

    bare = statistics.median(floor)
    print(
        f"registry start-up: {ROUNDS} fresh processes each, medians "
        f"(bare interpreter {bare * 1000:.0f} ms)"
    )
    for label, samples in (("REST client (urllib)", rest), ("MlflowClient", client)):
        print(
            f"  {label:21} import {median(samples, 'import') * 1000:6.0f} ms"
            f"  first call {median(samples, 'first_call') * 1000:5.0f} ms"
            f"  warm call {median(samples, 'warm_call') * 1000:5.1f} ms"
            f"  process {median(samples, 'process') * 1000:6.0f} ms"
            f"  peak RSS {median(samples, 'rss_mib'):5.0f} MiB"
        )
    start_up = {
        name: median(samples, "import") + median(samples, "first_call")
        for name, samples in (("rest", rest), ("client", client))
    }
    print(
        f"  ratio MlflowClient / REST: import + first call "
        f"{start_up['client'] / start_up['rest']:.1f}x "
        f"(+{(start_up['client'] - start_up['rest']) * 1000:.0f} ms), "
        f"warm call {median(client, 'warm_call') / median(rest, 'warm_call'):.1f}x, "
        f"peak RSS {median(client, 'rss_mib') / median(rest, 'rss_mib'):.1f}x"
    )
    return 0


if __name__ == "__main__":
    print("== registry ==", flush=True)  # as tests.benchmarks heads the others
    sys.exit(main())

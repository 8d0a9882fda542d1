"""`make bench`: every benchmark, each printing figures next to a floor measured in the same run."""

from __future__ import annotations

import sys

from tests.benchmarks import diff, localrun, promotion, service, validate


def main() -> int:
    for benchmark in (validate, diff, promotion, service, localrun):
        print(f"== {benchmark.__name__.rsplit('.', 1)[-1]} ==", flush=True)
        benchmark.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())

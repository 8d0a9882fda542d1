"""Tests by audience: mlopsctl/ mirrors scripts/mlopsctl, platform/ the manifests and images,
scripts/ the demo and its helpers; support/ what they share; benchmarks/ for `make bench`."""

import sys
from pathlib import Path

# scripts/ holds the demo and its helpers (local_mlflow), which the tests share.
_SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)

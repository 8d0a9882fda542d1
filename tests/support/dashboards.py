"""The platform's Grafana dashboards as shipped (base/*/dashboards/*.json), and their queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.paths import REPOSITORY

DASHBOARD_FILES = sorted(REPOSITORY.glob("base/*/dashboards/*.json"))


def load(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text())
    assert isinstance(document, dict)
    return document


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows only group them), rows' nested panels included."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query of the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard)
        for target in panel["targets"]
    ]

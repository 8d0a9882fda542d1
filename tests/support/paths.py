"""Where the repository and its pinned tools are."""

from __future__ import annotations

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPOSITORY / ".tools"
PLATFORM_PATHS = ("mlopsctl.yaml", "apps", "base", "clusters", "overlays")

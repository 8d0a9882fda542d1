"""Point a copy of the platform at another Git remote and branch, for the end-to-end workflow.

The e2e workflow (.github/workflows/e2e.yaml) pushes the commit under test to a throwaway
branch and lets Argo CD deploy *that*: every Application, the AppProjects, the promoter and
mlopsctl.yaml must name the branch (and the real repository, in a fork) instead of main.
Textual, like the promoter's edits: every other byte stays as it was.

    python scripts/e2e_branch.py REMOTE BRANCH [--repo DIR]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

PLATFORM_DIRECTORIES = ("apps", "base", "clusters", "overlays")


def rewrite(text: str, old_url: str, new_url: str, old_branch: str, new_branch: str) -> str:
    text = text.replace(old_url, new_url)
    # Applications that follow the promotion branch (chart sources pin versions: untouched).
    text = re.sub(
        rf"^(\s*targetRevision:\s*){re.escape(old_branch)}\s*$",
        lambda match: f"{match.group(1)}{new_branch}",
        text,
        flags=re.MULTILINE,
    )
    # The promoter's branch, and mlopsctl.yaml's promotion branch.
    text = re.sub(
        rf"(- name: MLOPSCTL_BRANCH\n\s*value:\s*){re.escape(old_branch)}\s*$",
        lambda match: f"{match.group(1)}{new_branch}",
        text,
        flags=re.MULTILINE,
    )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("remote", help="the Git URL Argo CD and the promoter should use")
    parser.add_argument("branch", help="the branch they should follow")
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    arguments = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", arguments.branch) or ".." in arguments.branch:
        parser.error(f"branch {arguments.branch!r} is not a plain branch name")
    config_path = arguments.repo / "mlopsctl.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    old_url = str(config["repository"]["url"])
    old_branch = str(config.get("promotion", {}).get("branch", "main"))
    changed = 0
    files = [config_path] + [
        path
        for directory in PLATFORM_DIRECTORIES
        for path in sorted((arguments.repo / directory).rglob("*.yaml"))
    ]
    for path in files:
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, old_url, arguments.remote, old_branch, arguments.branch)
        if path == config_path:
            new = re.sub(
                rf"^(  branch:\s*){re.escape(old_branch)}(\s*(#.*)?)$",
                lambda match: f"{match.group(1)}{arguments.branch}{match.group(2)}",
                new,
                flags=re.MULTILINE,
            )
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed += 1
    print(f"e2e_branch: {changed} files now name {arguments.remote} at {arguments.branch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

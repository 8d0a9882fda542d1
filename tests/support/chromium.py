"""Headless Chromium driven over the DevTools protocol: load a page, wait for text, screenshot.

Debian's chromium, started with the flags this machine's closed network needs; the protocol
client is the `websockets` package (installed with MLflow), so no browser download is involved.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,900",
]


def page_text_and_screenshot(
    url: str, wanted: str, screenshot: Path, port: int, seconds: float = 60
) -> str:
    """The page's visible text once it contains `wanted`; a PNG of it is written to `screenshot`."""
    browser = shutil.which("chromium")
    if browser is None:
        raise RuntimeError("chromium is not installed: run `make setup` (scripts/setup-system.sh)")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    process = subprocess.Popen(
        [
            browser,
            *FLAGS,
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as answer:
                    targets = json.loads(answer.read())
                page = next(t for t in targets if t.get("type") == "page")
                break
            except (OSError, StopIteration):
                if time.monotonic() > deadline:
                    raise RuntimeError("chromium did not open its DevTools port") from None
                time.sleep(0.2)
        with connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024) as connection:
            return _drive(connection, url, wanted, screenshot, seconds)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


def _drive(
    connection: ClientConnection, url: str, wanted: str, screenshot: Path, seconds: float
) -> str:
    counter = itertools.count(1)

    def call(method: str, **params: Any) -> dict[str, Any]:
        identifier = next(counter)
        connection.send(json.dumps({"id": identifier, "method": method, "params": params}))
        while True:
            decoded = json.loads(connection.recv(timeout=30))
            if decoded.get("id") == identifier:
                if "error" in decoded:
                    raise RuntimeError(f"DevTools error: {decoded['error']}")
                return dict(decoded.get("result", {}))

    call("Page.enable")
    call("Page.navigate", url=url)
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline:
        result = call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        text = str(result.get("result", {}).get("value", ""))
        if wanted in text:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"{wanted!r} never appeared on {url}; the page said: {text[:500]!r}")
    time.sleep(1.0)  # let the last paint settle before the picture
    image = call("Page.captureScreenshot", format="png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(base64.b64decode(image["data"]))
    return text

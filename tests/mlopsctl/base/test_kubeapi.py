"""`KubeApi` against loopback HTTP servers that answer as a busy API server does: 429 with
Retry-After, then the answer."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlopsctl.base.kubeapi import THROTTLED_ATTEMPTS, KubeApi


class Busy(http.server.BaseHTTPRequestHandler):
    """429 `throttled` times, then 200 with an empty list."""

    throttled = 0
    seen = 0

    def do_GET(self) -> None:
        type(self).seen += 1
        status, body = (
            (429, {"kind": "Status", "message": "storage is (re)initializing"})
            if type(self).seen <= type(self).throttled
            else (200, {"kind": "NamespaceList", "items": []})
        )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_arguments: Any) -> None:
        pass


@pytest.fixture
def busy_server(tmp_path: Path) -> Iterator[tuple[type[Busy], Path]]:
    handler = type("BusyHandler", (Busy,), {"throttled": 0, "seen": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"},
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    yield handler, kubeconfig
    server.shutdown()
    server.server_close()


def test_a_busy_server_is_asked_again(busy_server):
    handler, kubeconfig = busy_server
    handler.throttled = 2
    status, answer = KubeApi(kubeconfig).request("GET", "/api/v1/namespaces")
    assert (status, answer["kind"], handler.seen) == (200, "NamespaceList", 3)


def test_asking_again_is_bounded(busy_server):
    handler, kubeconfig = busy_server
    handler.throttled = 1000
    status, answer = KubeApi(kubeconfig).request("GET", "/api/v1/namespaces")
    assert (status, handler.seen) == (429, THROTTLED_ATTEMPTS)
    assert answer["message"] == "storage is (re)initializing"

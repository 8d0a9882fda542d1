"""One node of the local run for tests of its parts (the kubelet, the controllers, the operators'
stand-ins): a `Cluster` over a real network of its own and real cgroups, whose images are
software of this machine (`operators.HostImage`), and small manifests to run on it.

Everything a node made is removed when its `node()` block ends: pods stopped, cgroups of the
run removed, the network torn down (namespace names carry a run id of their own).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from mlopsctl.base.errors import UnsupportedManifest
from mlopsctl.localrun import cgroups
from mlopsctl.localrun.cluster import Cluster
from mlopsctl.localrun.kubelet import RunnableImage
from mlopsctl.localrun.model import ObjectReference
from mlopsctl.localrun.network import RunNetwork
from mlopsctl.localrun.operators import STANDARD_PATH, HostImage, HostRecipe
from tests.support import processes

IMAGE = "registry.example.test/app:1.0"
ROOT_IMAGE = "registry.example.test/root-app:1.0"
APP_UID = 10001

# The image's program: an HTTP server reporting what its process sees. GET /ready answers 200
# unless /tmp/unready exists; GET /report answers JSON; it exits on SIGTERM, saying so.
SERVER = """\
import json, os, signal, socket, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

def files(directory):
    found = {}
    for base, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(base, name)
            with open(path) as file:
                found[path] = [file.read(), oct(os.stat(path).st_mode & 0o777)]
    return found

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/ready":
            status, body = (503, b"unready") if os.path.exists("/tmp/unready") else (200, b"ok")
        else:
            status, body = 200, json.dumps({
                "argv": sys.argv[1:],
                "env": dict(os.environ),
                "ids": [os.getuid(), os.getgid(), sorted(os.getgroups())],
                "cwd": os.getcwd(),
                "hostname": socket.gethostname(),
                "hosts": open("/etc/hosts").read(),
                "files": {**files("/etc/app"), **files("/scratch")},
                "answered_by": os.environ.get("HOSTNAME", ""),
            }).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

def stop(*_):
    print("terminated gracefully", flush=True)
    os._exit(0)

signal.signal(signal.SIGTERM, stop)
port = int(next(a for a in sys.argv if a.startswith("--port=")).split("=", 1)[1])
print(f"serving on {port}", flush=True)
HTTPServer(("0.0.0.0", port), Handler).serve_forever()
"""


class HostImages:
    """Image references -> software of this machine: the app image (user `app`, the server
    above at /app/server.py) and an image that runs as root; any other is refused, as the run
    refuses an image with no build context."""

    def __init__(self, rootfs: Path) -> None:
        (rootfs / "app").mkdir(parents=True, exist_ok=True)
        (rootfs / "app" / "server.py").write_text(SERVER)
        environment = {"PATH": STANDARD_PATH, "LANG": "C.UTF-8", "FROM_IMAGE": "image env"}
        self.images: dict[str, RunnableImage] = {
            IMAGE: HostImage(
                "the test's app image",
                recipe=HostRecipe(
                    entrypoint=("python3", "/app/server.py"),
                    cmd=("--port=8080",),
                    workdir="/app",
                    user="app",
                ),
                passwd_lines=(f"app:x:{APP_UID}:{APP_UID}::/app:/bin/sh",),
                group_lines=(f"app:x:{APP_UID}:",),
                environment=environment,
                rootfs=rootfs,
            ),
            ROOT_IMAGE: HostImage("an image that runs as root", environment=environment),
        }

    def image(self, reference: str, resource: ObjectReference, field: str) -> RunnableImage:
        if reference not in self.images:
            raise UnsupportedManifest(resource, field, f"no image {reference} in the test")
        return self.images[reference]


@contextlib.contextmanager
def node(directory: Path, log: Callable[[str], None] | None = None) -> Iterator[Cluster]:
    """A cluster of one node whose controllers run (`Cluster.start`)."""
    run_id = f"n{secrets.token_hex(3)}"
    network = RunNetwork(run_id)
    driver = cgroups.detect()
    lines: list[str] = []
    cluster = Cluster(
        run_id,
        directory / "state",
        network,
        driver,
        HostImages(directory / "rootfs"),
        None,
        log or lines.append,
    )
    try:
        network.setup()
        yield cluster
    finally:
        try:
            cluster.stop()
            driver.remove_run(run_id)
        finally:
            # Puts IPv4 forwarding back as it found it, unless another run still needs it.
            network.teardown()


def deployment(
    name: str,
    containers: list[dict[str, Any]],
    namespace: str = "apps",
    kind: str = "Deployment",
    **pod: Any,
) -> dict[str, Any]:
    """A Deployment (or Job) of `containers` labelled app=<name>; `pod` adds pod spec fields."""
    body: dict[str, Any] = {
        "apiVersion": "batch/v1" if kind == "Job" else "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers, **pod},
            }
        },
    }
    if kind != "Job":
        body["spec"]["selector"] = {"matchLabels": {"app": name}}
    return body


def server(name: str = "app", port: int = 8080, **fields: Any) -> dict[str, Any]:
    """A container of the app image serving on `port`, ready when /ready answers."""
    container: dict[str, Any] = {
        "name": name,
        "image": IMAGE,
        "args": [f"--port={port}"],
        "ports": [{"name": "http", "containerPort": port}],
        # Probed every 0.2 s (the run takes fractions of a second where a manifest would say
        # 1): a pod is ready in a fraction of a second, not after a second probe.
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 0.2},
    }
    container.update(fields)
    return container


def config_map(name: str, data: dict[str, str], namespace: str = "apps") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def from_yaml(text: str) -> dict[str, Any]:
    document = yaml.safe_load(text)
    assert isinstance(document, dict)
    return document


def wait_for(condition: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
    return processes.wait_for(condition, what, seconds, interval=0.05)

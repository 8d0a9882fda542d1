"""The tests' MLflow server is the one they started, never another program on its port.

Parallel test workers pick free ports at the same time; a server that lost its port to another
program must not be handed out with that program's URL (a CI run once listed webhooks through
another worker's MLflow, which then stopped under it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.loopback import QuietHandler, serving
from tests.support.mlflow_fixtures import PortTakenError, start_server


class Healthy(QuietHandler):
    def do_GET(self) -> None:
        self.reply(200, b"OK", "text/plain")


def test_a_server_whose_port_is_taken_is_refused_not_adopted(tmp_path: Path):
    with serving(Healthy) as other:
        port = int(other.rsplit(":", 1)[1])
        with pytest.raises(PortTakenError, match=f"port {port} was taken"):
            start_server(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", port)

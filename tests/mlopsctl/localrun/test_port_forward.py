"""The run's port-forwards answer `localhost`, whichever loopback a client tries first."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from mlopsctl.localrun.network import PortForward
from tests.support.loopback import QuietHandler, serving


class Hello(QuietHandler):
    def do_GET(self) -> None:
        self.reply(200, b"from the pod", "text/plain")


@pytest.fixture
def forward() -> Iterator[PortForward]:
    # The "pod" is this process's own network namespace, serving on its 127.0.0.1.
    with serving(Hello) as url:
        remote_port = int(url.rsplit(":", 1)[1])
        opened = PortForward(0, lambda: "/proc/self/ns/net", remote_port)
        try:
            yield opened
        finally:
            opened.close()


def fetch(host: str, port: int) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as connection:
        connection.settimeout(10)
        connection.connect((host, port))
        connection.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    return answer


def test_both_loopbacks_reach_the_pod(forward: PortForward):
    for host in ("127.0.0.1", "::1", "localhost"):
        for address in {info[4][0] for info in socket.getaddrinfo(host, forward.local_port)}:
            assert fetch(str(address), forward.local_port).endswith(b"from the pod"), address


def test_no_other_program_can_take_the_forwards_port_on_either_loopback(forward: PortForward):
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as other, pytest.raises(OSError) as refused:
            other.bind((host, forward.local_port))
        assert refused.value.errno == errno.EADDRINUSE, host


def test_a_port_asked_for_by_number_is_used(forward: PortForward):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        wanted = int(probe.getsockname()[1])
    asked = PortForward(wanted, lambda: "/proc/self/ns/net", forward.remote_port)
    try:
        assert asked.local_port == wanted
        assert fetch("::1", wanted).endswith(b"from the pod")
    finally:
        asked.close()

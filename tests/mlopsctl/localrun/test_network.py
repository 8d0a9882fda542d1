"""The run's network, made for real: namespaces with routed veths, Service addresses that forward
to ready backends, connections made inside a namespace, port-forwards, and nothing left behind,
whether the run tears down or is killed.

Each test makes networks under run ids of its own (their namespaces are named after them) and
tears them down in a finally.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlopsctl.localrun import network, runs
from mlopsctl.localrun.network import Endpoint, PortForward, RunNetwork, ServiceRule
from tests.support.loopback import QuietHandler, accepting, serving
from tests.support.processes import ended

pytestmark = pytest.mark.usefixtures("as_root")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _in_namespace(path: str, make: Callable[[], socket.socket]) -> socket.socket:
    """A socket made inside a network namespace (by a thread that joins it and ends): it keeps
    that namespace."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            descriptor = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(descriptor, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {path}")
            finally:
                os.close(descriptor)
            made.append(make())
        except BaseException as error:
            failed.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


@contextlib.contextmanager
def answering(namespace_path: str, address: str, text: str, port: int = 0) -> Iterator[int]:
    """A TCP server inside a namespace, at `address` on `port` (0: a free one), that sends `text`
    to every client; yields the port."""
    listener = _in_namespace(namespace_path, lambda: socket.create_server((address, port)))

    def send_text(connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            connection.sendall(text.encode())

    with accepting(listener, send_text) as bound:
        yield bound


def read_all(connection: socket.socket) -> str:
    with connection:
        connection.settimeout(10)
        data = b""
        while chunk := connection.recv(4096):
            data += chunk
    return data.decode()


def from_host(address: str, port: int) -> str:
    return read_all(socket.create_connection((address, port), timeout=10))


def from_inside(endpoint: Endpoint, address: str, port: int) -> str:
    return read_all(network.connect_inside(endpoint.namespace_path, (address, port), timeout=10))


def ip_json(*arguments: str) -> list[dict[str, object]]:
    completed = subprocess.run(["ip", "-j", *arguments], capture_output=True, text=True, check=True)
    return json.loads(completed.stdout or "[]")  # type: ignore[no-any-return]


def namespaces() -> set[str]:
    return {path.name for path in network.NETNS_DIRECTORY.glob("*")}


def links() -> set[str]:
    return {str(link["ifname"]) for link in ip_json("link")}


def routes() -> list[str]:
    return subprocess.run(
        ["ip", "route", "show", "table", "all"], capture_output=True, text=True, check=True
    ).stdout.splitlines()


def nft_tables() -> set[str]:
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in listed.stdout.splitlines() if line.startswith("table")}


def loopback_addresses() -> set[str]:
    [lo] = ip_json("address", "show", "dev", "lo")
    return {str(entry["local"]) for entry in lo["addr_info"]}  # type: ignore[union-attr]


def what_the_run_made(run: RunNetwork) -> list[str]:
    """Everything of `run` the machine still holds, named."""
    found = [f"namespace {name}" for name in namespaces() if run.run_id in name]
    found += [f"link {name}" for name in links() if name.startswith(f"ml{run.run_id}")]
    found += [
        f"route {line}"
        for line in routes()
        if str(run.block) in line or str(run.service_network) in line
    ]
    found += [f"table {name}" for name in nft_tables() if name.startswith(run.table)]
    found += [f"address {a}" for a in loopback_addresses() if a == run.node_address]
    return found


@pytest.fixture
def ip_forward() -> Iterator[None]:
    """IPv4 forwarding put back as it was, as a run's teardown puts it back: a killed run cannot,
    and a run still going (another test's, a platform's) needs it on."""
    path = Path("/proc/sys/net/ipv4/ip_forward")
    before = path.read_text().strip()
    try:
        yield
    finally:
        if before == "0" and not live_runs():
            path.write_text("0")


def live_runs() -> bool:
    """Whether a live run holds an address block (its lock dies with its process)."""
    return any(runs.lock_is_held(path) for path in network.STATE_DIRECTORY.glob("block-*.lock"))


@contextlib.contextmanager
def run_network() -> Iterator[RunNetwork]:
    run = RunNetwork(f"t{secrets.token_hex(3)}")
    try:
        run.setup()
        yield run
    finally:
        run.teardown()


def test_pods_get_an_address_of_their_own_and_reach_each_other_through_the_host():
    with run_network() as run:
        first, second = run.add("apps/first"), run.add("apps/second")
        git_host = run.add("git host", run_host=True)
        assert ipaddress.ip_address(first.address) in run.pod_network
        assert ipaddress.ip_address(second.address) in run.pod_network
        assert ipaddress.ip_address(git_host.address) in run.host_network
        assert len({first.address, second.address, git_host.address, run.node_address}) == 4
        # One address on the pod's eth0 and nothing of IPv6, which the policy rules do not see.
        inside = ip_json("-n", first.namespace, "address", "show", "dev", "eth0")
        assert [(a["family"], a["local"]) for a in inside[0]["addr_info"]] == [  # type: ignore[index, union-attr]
            ("inet", first.address)
        ]
        with answering(first.namespace_path, first.address, "first") as port:
            assert from_inside(second, first.address, port) == "first"
            assert from_inside(git_host, first.address, port) == "first"
            assert from_host(first.address, port) == "first"
        # The host is the node, as the pods see it: they reach it at its own address.
        with answering("/proc/self/ns/net", run.node_address, "node") as port:
            assert from_inside(first, run.node_address, port) == "node"
        # An address of the run's block that nobody holds goes nowhere, not out of the machine.
        unused = str(run.pod_network.network_address + 4000)
        with pytest.raises(OSError):
            socket.create_connection((unused, 80), timeout=5).close()


def test_teardown_removes_everything_the_run_made():
    with run_network() as run:
        for index in range(3):
            run.add(f"apps/pod-{index}")
        run.add("git host", run_host=True)
        run.set_services([ServiceRule(run.allocate_service_address(), 80, "TCP", ())])
        assert len(what_the_run_made(run)) >= 3 * 2 + 4, what_the_run_made(run)
        assert runs.is_live(run.run_id)
    assert what_the_run_made(run) == []
    assert not runs.is_live(run.run_id)


def test_a_service_address_forwards_to_its_ready_backends_and_refuses_without_one():
    with run_network() as run:
        first, second, client = (run.add(f"apps/{name}") for name in ("a", "b", "client"))
        service = run.allocate_service_address()
        assert ipaddress.ip_address(service) in run.service_network
        with (
            answering(first.namespace_path, first.address, "a") as port_a,
            answering(second.namespace_path, second.address, "b") as port_b,
        ):
            run.set_services([ServiceRule(service, 80, "TCP", ((first.address, port_a),))])
            assert from_host(service, 80) == "a"
            assert from_inside(client, service, 80) == "a"
            # Both backends ready: connections are spread over them, as kube-proxy spreads them.
            backends = ((first.address, port_a), (second.address, port_b))
            run.set_services([ServiceRule(service, 80, "TCP", backends)])
            assert {from_host(service, 80) for _ in range(4)} == {"a", "b"}
            assert {from_inside(client, service, 80) for _ in range(4)} == {"a", "b"}
            # No ready backend: the host's connection is refused at once, not left to time out.
            run.set_services([ServiceRule(service, 80, "TCP", ())])
            with pytest.raises(ConnectionRefusedError):
                from_host(service, 80)
            # Another port of the same address was never a Service port.
            run.set_services([ServiceRule(service, 80, "TCP", ((first.address, port_a),))])
            with pytest.raises(ConnectionRefusedError):
                from_host(service, 81)


def test_a_connection_made_inside_a_namespace_reaches_that_namespaces_loopback():
    """What a port-forward does: the pod's own 127.0.0.1, which nothing else can reach."""
    with run_network() as run:
        pod = run.add("apps/pod")
        with answering(pod.namespace_path, "127.0.0.1", "the pod's loopback") as port:
            assert from_inside(pod, "127.0.0.1", port) == "the pod's loopback"
            with pytest.raises(ConnectionRefusedError):
                from_host("127.0.0.1", port)
        with pytest.raises(FileNotFoundError):
            network.connect_inside("/run/netns/no-such-namespace", ("127.0.0.1", 1), timeout=1)


def test_runs_side_by_side_get_address_blocks_of_their_own():
    with run_network() as first, run_network() as second:
        assert first.block != second.block
        assert not first.block.overlaps(second.block)
        a, b = first.add("apps/a"), second.add("apps/a")
        assert a.namespace != b.namespace and a.host_interface != b.host_interface
        with answering(a.namespace_path, a.address, "first run") as port:
            assert from_inside(b, a.address, port) == "first run"
        blocks = {first.block, second.block}
    # A block is free again once its run is gone.
    with run_network() as third:
        assert third.block in blocks


def wait_until_dead(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not ended(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


KILLED_RUN = textwrap.dedent(
    """
    import subprocess, sys, time
    from mlopsctl.localrun.network import RunNetwork, ServiceRule

    run = RunNetwork(sys.argv[1])
    run.setup()
    pod = run.add("apps/pod")
    run.set_services([ServiceRule(run.allocate_service_address(), 80, "TCP", ())])
    # A container left running in the pod, as a killed run leaves its shims.
    subprocess.Popen(["ip", "netns", "exec", pod.namespace, "sleep", "300"])
    print(pod.namespace, run.block, run.service_network, flush=True)
    time.sleep(300)
    """
)


@contextlib.contextmanager
def killed_run(run_id: str) -> Iterator[tuple[str, str, str]]:
    """A run in a process of its own, with a pod and a Service: (the pod's namespace, the
    run's block, its Service range). Killed with SIGKILL when the block ends."""
    killed = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, run_id], stdout=subprocess.PIPE, text=True
    )
    try:
        assert killed.stdout is not None
        namespace, block, services = killed.stdout.readline().split()
        yield namespace, block, services
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)


def test_what_a_killed_run_left_is_removed_by_the_next(ip_forward: None):
    run_id = f"t{secrets.token_hex(3)}"
    with killed_run(run_id) as (namespace, block, services):
        assert namespace in namespaces()
        assert [line for line in routes() if block in line or services in line]
        [container] = subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True
        ).stdout.split()
        # While the run lives, nothing of it is a leftover.
        assert runs.is_live(run_id)
        assert not any(run_id in item for item in network.remove_leftovers())
        assert namespace in namespaces()
    removed = network.remove_leftovers()
    assert f"network namespace {namespace}" in removed
    assert f"nftables table mlopsctl_{run_id}_services" in removed
    assert namespace not in namespaces()
    assert not [name for name in links() if name.startswith(f"ml{run_id}")]
    assert not [line for line in routes() if block in line or services in line]
    assert wait_until_dead(int(container))
    assert not runs.is_live(run_id)
    assert network.remove_leftovers() == []


def test_a_killed_run_is_removed_by_the_next_even_with_no_record_of_its_block(ip_forward: None):
    """A run killed once its block was handed to another, or before lock records existed: what
    it named and what it left in the block goes, and the next run gets the same addresses."""
    run_id = f"t{secrets.token_hex(3)}"
    with killed_run(run_id) as (namespace, block, services):
        pass
    # Nothing on record names the killed run any more.
    (network.STATE_DIRECTORY / f"block-{block.split('.')[1]}.lock").write_text("someone-else")
    (network.STATE_DIRECTORY / f"run-{run_id}.lock").unlink(missing_ok=True)
    assert namespace in namespaces()
    with run_network() as run:
        assert str(run.block) == block
        assert f"network namespace {namespace}" in run.leftovers_removed
        assert f"nftables table mlopsctl_{run_id}_services" in run.leftovers_removed
        assert namespace not in namespaces()
        assert not [name for name in nft_tables() if name.startswith(f"mlopsctl_{run_id}")]
        # The addresses the killed run had are this run's now, and its Services answer.
        pod = run.add("apps/pod")
        service = run.allocate_service_address()
        assert (pod.address, service) == (
            str(run.pod_network.network_address + 2),
            str(run.service_network.network_address + 1),
        )
        with answering(pod.namespace_path, pod.address, "the new run") as port:
            run.set_services([ServiceRule(service, 80, "TCP", ((pod.address, port),))])
            assert from_host(service, 80) == "the new run"
    assert not [line for line in routes() if block in line or services in line]


# -- port-forwards ------------------------------------------------------------------------------


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


def test_a_forward_follows_the_pod_it_is_given_for_each_connection():
    """A restarted pod is a new namespace: the next connection goes there; with no ready pod the
    client's connection is closed."""
    with run_network() as run:
        old, new = run.add("apps/web-old"), run.add("apps/web-new")
        current: list[str | None] = [old.namespace_path]
        with (
            answering(old.namespace_path, "127.0.0.1", "old pod") as port,
            answering(new.namespace_path, "127.0.0.1", "new pod", port),
        ):
            forward = PortForward(0, lambda: current[0], port)
            try:
                assert from_host("127.0.0.1", forward.local_port) == "old pod"
                current[0] = new.namespace_path
                assert from_host("127.0.0.1", forward.local_port) == "new pod"
                current[0] = None
                assert from_host("127.0.0.1", forward.local_port) == ""
            finally:
                forward.close()

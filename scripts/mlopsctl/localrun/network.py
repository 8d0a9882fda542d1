"""The run's network: a namespace per pod (and per run host), routed veths, Service VIPs, policy.

Each run owns one /16 from 10.200.0.0-10.239.255.255 (claimed with a lock file, so runs side by
side never collide; whatever a killed run left in the block is removed by the run that claims it
next, and what it left under its own name by any next run: `runs` tells live runs from dead):

    10.N.0.0/17     pod addresses, one /32 per pod, routed by the host to the pod's veth
    10.N.128.0/18   Service cluster IPs (DNAT to a ready pod's target port, as kube-proxy does)
    10.N.192.0/24   the run's own hosts, which are not pods: 10.N.192.1 is the node (the host
                    itself, as pods see it: the kube-state-metrics stand-in), then the git host

Pods reach each other only through the host (no bridge), so every flow crosses the host's
FORWARD hook, where the NetworkPolicies are enforced (`network_policy` writes the rules). A
blackhole route for the whole /16 keeps anything in it from leaving through the default route.
The Service range alone is routed to the host's loopback, from the node address: a connection
the host itself makes to a VIP (as on a node) needs a route before the output hook's DNAT can
send it to a pod, and a blackhole fails it at `connect` (EINVAL) before any rule sees it. What
is not DNAT-ed there is refused by the output chain, so nothing reaches the loopback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlopsctl.base.errors import LocalRunError
from mlopsctl.localrun import runs
from mlopsctl.localrun.runs import STATE_DIRECTORY

NETNS_DIRECTORY = Path("/run/netns")
GATEWAY = "169.254.1.1"
_FIRST_BLOCK, _LAST_BLOCK = 200, 239
CLONE_NEWNET = 0x40000000


def _run(*command: str, input_text: str | None = None) -> str:
    completed = subprocess.run(
        list(command), input=input_text, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise LocalRunError(
            f"{' '.join(command)}: {completed.stderr.strip() or completed.stdout.strip()}"
        )
    return completed.stdout


def _try(*command: str) -> None:
    subprocess.run(list(command), capture_output=True, check=False)


@dataclass(frozen=True)
class Endpoint:
    """A network namespace with one address: a pod, or a host of the run."""

    name: str
    namespace: str  # the name under /run/netns
    address: str
    host_interface: str

    @property
    def namespace_path(self) -> str:
        return str(NETNS_DIRECTORY / self.namespace)


@dataclass(frozen=True)
class ServiceRule:
    """One Service port: its VIP and port, and the ready backends (pod IP, target port)."""

    address: str
    port: int
    protocol: str
    backends: tuple[tuple[str, int], ...]


class RunNetwork:
    """Everything network a run creates, and removes again in `teardown` (also after a crash,
    through `remove_leftovers`).

    `run_lock` is the run's own (`runs.RunLock`), held by a caller that makes more than the
    network; without it the network takes one for itself and lets it go in `teardown`.
    """

    def __init__(self, run_id: str, run_lock: runs.RunLock | None = None) -> None:
        self.run_id = runs.check_run_id(run_id)
        self._own_run_lock = None if run_lock is not None else runs.RunLock(run_id)
        self._lock = threading.Lock()
        self._block_lock: int | None = None
        try:
            self.leftovers_removed = remove_leftovers()
            self.block = self._claim_block()
        except BaseException:
            self._release_run_lock()
            raise
        octet = self.block.network_address.packed[1]
        self.pod_network = ipaddress.IPv4Network(f"10.{octet}.0.0/17")
        self.service_network = ipaddress.IPv4Network(f"10.{octet}.128.0/18")
        self.host_network = ipaddress.IPv4Network(f"10.{octet}.192.0/24")
        self.node_address = f"10.{octet}.192.1"
        self._next_pod = 2
        self._next_service = 1
        self._next_host = 2
        self._endpoints: dict[str, Endpoint] = {}
        self.table = f"mlopsctl_{run_id}"
        self._forwarding_before: str | None = None

    # -- the /16 -------------------------------------------------------------------------------

    def _claim_block(self) -> ipaddress.IPv4Network:
        STATE_DIRECTORY.mkdir(parents=True, exist_ok=True)
        for octet in range(_FIRST_BLOCK, _LAST_BLOCK + 1):
            path = STATE_DIRECTORY / f"block-{octet}.lock"
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            os.ftruncate(descriptor, 0)
            os.write(descriptor, self.run_id.encode())
            self._block_lock = descriptor
            # Removed again here, not only by `remove_leftovers`: a run that claimed the block
            # after `remove_leftovers` looked at it has died since.
            self.leftovers_removed += _clear_blocks([octet])
            return ipaddress.IPv4Network(f"10.{octet}.0.0/16")
        raise LocalRunError("every address block of the local run is taken: are 40 runs going?")

    # -- set-up and teardown -----------------------------------------------------------------

    def setup(self) -> None:
        self._forwarding_before = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        _run("ip", "route", "add", "blackhole", str(self.block))
        _run("ip", "address", "add", f"{self.node_address}/32", "dev", "lo")
        # The services table (its refusals) is in place before the range is routed.
        self.set_services([])
        _run("ip", "route", "add", str(self.service_network), "dev", "lo", "src", self.node_address)

    def teardown(self) -> None:
        for endpoint in list(self._endpoints.values()):
            self.remove(endpoint)
        _try("nft", "delete", "table", "inet", self.table)
        _try("ip", "route", "del", str(self.service_network), "dev", "lo")
        _try("nft", "delete", "table", "ip", f"{self.table}_services")
        _try("ip", "address", "del", f"{self.node_address}/32", "dev", "lo")
        _try("ip", "route", "del", "blackhole", str(self.block))
        if self._forwarding_before == "0" and not _other_runs_active(self.block):
            Path("/proc/sys/net/ipv4/ip_forward").write_text("0")
        if self._block_lock is not None:
            os.close(self._block_lock)
            self._block_lock = None
        self._release_run_lock()

    def _release_run_lock(self) -> None:
        if self._own_run_lock is not None:
            self._own_run_lock.release()
            self._own_run_lock = None

    # -- pods and hosts ------------------------------------------------------------------------

    def add(self, name: str, run_host: bool = False) -> Endpoint:
        """A new namespace with one address, routed from the host."""
        with self._lock:
            if run_host:
                address = str(self.host_network.network_address + self._next_host)
                self._next_host += 1
            else:
                address = str(self.pod_network.network_address + self._next_pod)
                self._next_pod += 1
            index = int(ipaddress.ip_address(address)) & 0xFFFF
        namespace = f"mlopsctl-{self.run_id}-{index:x}"
        host_side = _interface_name(self.run_id, "h", index)
        pod_side = _interface_name(self.run_id, "p", index)
        endpoint = Endpoint(name, namespace, address, host_side)
        _run("ip", "netns", "add", namespace)
        try:
            _run("ip", "link", "add", host_side, "type", "veth", "peer", "name", pod_side)
            _run("ip", "link", "set", pod_side, "netns", namespace)
            _run("ip", "-n", namespace, "link", "set", pod_side, "name", "eth0")
            _run("ip", "-n", namespace, "address", "add", f"{address}/32", "dev", "eth0")
            _run("ip", "-n", namespace, "link", "set", "lo", "up")
            _run("ip", "-n", namespace, "link", "set", "eth0", "up")
            _run("ip", "-n", namespace, "route", "add", GATEWAY, "dev", "eth0", "scope", "link")
            _run("ip", "-n", namespace, "route", "add", "default", "via", GATEWAY, "dev", "eth0")
            _run("ip", "link", "set", host_side, "up")
            Path(f"/proc/sys/net/ipv4/conf/{host_side}/proxy_arp").write_text("1")
            # Proxied ARP answers wait up to 0.8 s by default: first connections would time out.
            Path(f"/proc/sys/net/ipv4/neigh/{host_side}/proxy_delay").write_text("0")
            # The policy rules filter IPv4: no IPv6 on the pod's link, not even link-local.
            with contextlib.suppress(OSError):
                Path(f"/proc/sys/net/ipv6/conf/{host_side}/disable_ipv6").write_text("1")
            _run(
                "ip",
                "netns",
                "exec",
                namespace,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
            )
            _run("ip", "route", "add", f"{address}/32", "dev", host_side)
        except LocalRunError:
            _try("ip", "link", "del", host_side)
            _try("ip", "netns", "del", namespace)
            raise
        with self._lock:
            self._endpoints[namespace] = endpoint
        return endpoint

    def remove(self, endpoint: Endpoint) -> None:
        _try("ip", "route", "del", f"{endpoint.address}/32")
        _try("ip", "link", "del", endpoint.host_interface)
        _try("ip", "netns", "del", endpoint.namespace)
        with self._lock:
            self._endpoints.pop(endpoint.namespace, None)

    def allocate_service_address(self) -> str:
        with self._lock:
            address = str(self.service_network.network_address + self._next_service)
            self._next_service += 1
            return address

    # -- Services (kube-proxy's part) ----------------------------------------------------------

    def set_services(self, rules: Sequence[ServiceRule]) -> None:
        """Replace every Service rule at once: a VIP with no ready backend refuses connections,
        as kube-proxy's reject rule does."""
        table = f"{self.table}_services"
        lines = [f"table ip {table} {{}}", f"delete table ip {table}", f"table ip {table} {{"]
        dnat: list[str] = []
        for rule in rules:
            if not rule.backends:
                continue
            protocol = rule.protocol.lower()
            match = f"ip daddr {rule.address} {protocol} dport {rule.port}"
            if len(rule.backends) == 1:
                address, port = rule.backends[0]
                dnat.append(f"    {match} dnat to {address}:{port}")
            else:
                entries = ", ".join(
                    f"{index} : {address} . {port}"
                    for index, (address, port) in enumerate(rule.backends)
                )
                dnat.append(
                    f"    {match} dnat to numgen inc mod {len(rule.backends)} map {{ {entries} }}"
                )
        for chain, hook, priority in (
            ("prerouting", "prerouting", "-100"),
            ("output", "output", "-100"),
        ):
            lines.append(
                f"  chain services_{chain} {{ type nat hook {hook} priority {priority}; "
                "policy accept;"
            )
            lines.extend(dnat)
            lines.append("  }")
        # What the host sends to a VIP with no ready backend is refused, as kube-proxy does; the
        # pods' side of this lives with the policy rules (network_policy's prerouting chain).
        lines.extend(
            [
                "  chain services_unready_output { type filter hook output priority -10; "
                "policy accept;",
                f"    ip daddr {self.service_network} meta l4proto tcp reject with tcp reset",
                f"    ip daddr {self.service_network} reject",
                "  }",
            ]
        )
        lines.append("}")
        _run("nft", "-f", "-", input_text="\n".join(lines) + "\n")

    def set_policy(self, ruleset: str) -> None:
        """Load the NetworkPolicy ruleset (`network_policy.nftables_ruleset`), atomically."""
        _run("nft", "-f", "-", input_text=ruleset)

    def list_set(self, name: str) -> str:
        """`nft -j list set` of a set in the policy table (denied flows), as JSON text."""
        completed = subprocess.run(
            ["nft", "-j", "list", "set", "inet", self.table, name],
            capture_output=True,
            text=True,
            check=False,
        )
        return completed.stdout if completed.returncode == 0 else "{}"


def _interface_name(run_id: str, side: str, index: int) -> str:
    """A veth end of the pod at `index` of the run: `h` the host's, `p` the pod's."""
    return f"ml{run_id}{side}{index:x}"


def _other_runs_active(mine: ipaddress.IPv4Network) -> bool:
    return any(
        runs.lock_is_held(path)
        for path in STATE_DIRECTORY.glob("block-*.lock")
        if path.name != f"block-{mine.network_address.packed[1]}.lock"
    )


def remove_leftovers() -> list[str]:
    """Namespaces, links, routes, addresses and tables of runs that died without a teardown.
    Returns what was removed.

    Blocks first: the Service range's route of a block nobody holds goes before the tables,
    since without its table's refusals the host's connections to a VIP would be delivered to
    the host itself. Then everything named by a run that is not alive, whichever block it had.
    """
    held: list[int] = []
    try:
        free: list[int] = []
        for path in sorted(STATE_DIRECTORY.glob("block-*.lock")):
            octet = path.name.removeprefix("block-").removesuffix(".lock")
            if not octet.isdigit():
                continue
            descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            held.append(descriptor)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live run's
            free.append(int(octet))
        removed = _clear_blocks(free)
    finally:
        for descriptor in held:
            os.close(descriptor)
    # Listed before liveness is asked: a run takes its lock before it names anything, so what
    # is listed here was made by a run that is either still alive when asked, or dead.
    namespaces = _named_namespaces()
    tables = _named_tables()
    for run_id in sorted({run_id for run_id, _ in namespaces} | {run_id for run_id, _ in tables}):
        if runs.is_live(run_id):
            continue
        for owner, namespace in namespaces:
            if owner != run_id:
                continue
            _kill_processes_in(namespace)
            _try("ip", "netns", "del", namespace)
            # The veth goes with its namespace once nothing is in it; deleted here as well, as
            # the killed processes may still hold the namespace for a moment.
            index = int(namespace.rsplit("-", 1)[1], 16)
            _try("ip", "link", "del", _interface_name(run_id, "h", index))
            removed.append(f"network namespace {namespace}")
        for owner, (family, table) in tables:
            if owner == run_id:
                _try("nft", "delete", "table", family, table)
                removed.append(f"nftables table {table}")
    runs.forget_dead()
    return removed


def _clear_blocks(octets: Sequence[int]) -> list[str]:
    """What is left in blocks nobody holds (the caller holds their locks): routes to them and
    the node's address on the loopback. A live run in them is impossible, so all of it is a
    leftover. Addresses and routes are listed once for all the blocks."""
    if not octets:
        return []
    blocks = [ipaddress.IPv4Network(f"10.{octet}.0.0/16") for octet in octets]
    removed: list[str] = []
    for address in _loopback_addresses():
        if any(ipaddress.IPv4Address(address) in block for block in blocks):
            _try("ip", "address", "del", f"{address}/32", "dev", "lo")
            removed.append(f"address {address} on lo")
    for route in _main_routes():
        destination = str(route.get("dst", ""))
        try:
            network = ipaddress.IPv4Network(destination)
        except ValueError:
            continue  # "default", or not IPv4
        if any(network.subnet_of(block) for block in blocks):
            _try("ip", "route", "del", destination)
            removed.append(f"route {destination}")
    return removed


def _ip_json(*arguments: str) -> list[dict[str, object]]:
    output = subprocess.run(
        ["ip", "-j", *arguments], capture_output=True, text=True, check=False
    ).stdout
    try:
        listed = json.loads(output or "[]")
    except json.JSONDecodeError:
        return []
    return [entry for entry in listed if isinstance(entry, dict)]


def _loopback_addresses() -> list[str]:
    return [
        str(address["local"])
        for interface in _ip_json("-4", "address", "show", "dev", "lo")
        for address in interface.get("addr_info", []) or []  # type: ignore[attr-defined]
        if isinstance(address, dict) and "local" in address
    ]


def _main_routes() -> list[dict[str, object]]:
    return _ip_json("-4", "route", "show", "table", "main")


def _named_namespaces() -> list[tuple[str, str]]:
    """(run id, namespace) of every namespace a run named."""
    if not NETNS_DIRECTORY.is_dir():
        return []
    found = []
    for path in NETNS_DIRECTORY.iterdir():
        if not path.name.startswith("mlopsctl-"):
            continue
        run_id, separator, _ = path.name.removeprefix("mlopsctl-").rpartition("-")
        if separator and runs.RUN_ID.fullmatch(run_id):
            found.append((run_id, path.name))
    return sorted(found)


def _named_tables() -> list[tuple[str, tuple[str, str]]]:
    """(run id, (family, table)) of every nftables table a run named."""
    listed = subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True, check=False
    ).stdout
    found = []
    for line in listed.splitlines():
        words = line.split()
        if len(words) != 3 or words[0] != "table" or not words[2].startswith("mlopsctl_"):
            continue
        run_id = words[2].removeprefix("mlopsctl_").removesuffix("_services")
        if runs.RUN_ID.fullmatch(run_id):
            found.append((run_id, (words[1], words[2])))
    return sorted(found)


def _kill_processes_in(namespace: str) -> None:
    """What a killed run left running in a namespace (container shims, the git host)."""
    listed = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    )
    for pid in listed.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)


# -- sockets inside a namespace (port-forwards, probes from inside a pod) -----------------------

_libc_setns = None


def _setns(path: str) -> None:
    import ctypes

    global _libc_setns
    if _libc_setns is None:
        _libc_setns = ctypes.CDLL(None, use_errno=True).setns
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc_setns(descriptor, CLONE_NEWNET) != 0:
            number = ctypes.get_errno()
            raise OSError(number, f"setns {path}: {os.strerror(number)}")
    finally:
        os.close(descriptor)


def connect_inside(namespace_path: str, address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection made from inside a network namespace, as `kubectl port-forward` makes
    it (to the pod's own 127.0.0.1), or as a pod's client would (to a Service name's VIP).

    Namespaces belong to threads: a short-lived thread joins the namespace, connects, and ends,
    so no other thread of the run ever changes namespace. The socket keeps its namespace.
    """
    result: list[socket.socket] = []
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            _setns(namespace_path)
            result.append(socket.create_connection(address, timeout=timeout))
        except BaseException as error:  # handed to the caller's thread below
            failure.append(error)

    thread = threading.Thread(target=connect, name="connect-inside", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


class PortForward:
    """`kubectl port-forward`: a listener on the host's loopback whose connections are made
    inside a pod's namespace to its 127.0.0.1:PORT. `pick` chooses the pod for each connection
    (a ready pod of the Service), so a restarted pod is followed.

    Like kubectl, it listens on both loopbacks, 127.0.0.1 and ::1, on one port: its URLs say
    `localhost`, which clients try as ::1 first, and another program listening on ::1 at that
    port would otherwise answer in its place."""

    def __init__(self, local_port: int, pick: Callable[[], str | None], remote_port: int) -> None:
        self.pick = pick
        self.remote_port = remote_port
        self.listeners = _loopback_listeners(local_port)
        self.local_port = int(self.listeners[0].getsockname()[1])
        self._closed = threading.Event()
        for listener in self.listeners:
            threading.Thread(
                target=self._accept,
                args=(listener,),
                name=f"port-forward-{self.local_port}",
                daemon=True,
            ).start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        namespace = self.pick()
        if namespace is None:
            client.close()
            return
        try:
            upstream = connect_inside(namespace, ("127.0.0.1", self.remote_port), timeout=10)
        except OSError:
            client.close()
            return
        _splice(client, upstream)

    def close(self) -> None:
        self._closed.set()
        for listener in self.listeners:
            with contextlib.suppress(OSError):
                listener.close()


def _loopback_listeners(port: int) -> list[socket.socket]:
    """Listeners on 127.0.0.1 and ::1 at one port (any free one for 0); IPv4 alone where the
    machine has no IPv6 loopback, or where a port asked for by number is taken on ::1."""
    for _attempt in range(8 if port == 0 else 1):
        ipv4 = socket.create_server(("127.0.0.1", port), reuse_port=False)
        chosen = int(ipv4.getsockname()[1])
        try:
            ipv6 = socket.create_server(("::1", chosen), family=socket.AF_INET6, reuse_port=False)
        except OSError as error:
            if error.errno == errno.EADDRINUSE and port == 0:
                ipv4.close()  # another port, free on both
                continue
            return [ipv4]
        return [ipv4, ipv6]
    raise OSError(errno.EADDRINUSE, "no port free on both 127.0.0.1 and ::1 after 8 tries")


def _splice(first: socket.socket, second: socket.socket) -> None:
    def pump(source: socket.socket, destination: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                destination.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                destination.shutdown(socket.SHUT_WR)

    for connection in (first, second):
        connection.settimeout(None)
    other = threading.Thread(target=pump, args=(second, first), daemon=True)
    other.start()
    pump(first, second)
    other.join()
    first.close()
    second.close()


@contextlib.contextmanager
def lock_file(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)

"""NetworkPolicies of the local run: which flows they allow, the nftables rules that enforce
them, and what those rules denied.

Pure: manifests and pod addresses in, data and ruleset text out. `network` loads the ruleset
with `nft -f` and lists the denial sets with `nft -j list set`; this module reads that output.

How the rules see traffic: every pod has one IPv4 address on a routed veth, so pod-to-pod
traffic (after Service VIPs were DNATed to a pod in PREROUTING) crosses the host's FORWARD hook,
and traffic from a pod to the host itself crosses INPUT (pods reach the host at the node
address only: its other addresses are the machine's real network). Traffic the host sends
(kubelet probes, port-forwards) leaves through OUTPUT, which these rules leave alone: Kubernetes
always lets the node reach its pods. A pod is checked against its egress allowances as a
source and its ingress allowances as a destination; the run's own hosts (a git host, say) are
no pods, so only the pods' side of a flow with them is checked. Nothing in the run's address
ranges may talk to any address outside them (the real network, the internet): such traffic is
dropped whatever the policies say, and recorded apart from policy denials so a report tells
the two apart. Established connections carry on when the rules change, as with most
NetworkPolicy implementations.

`ipBlock` peers match addresses as addresses, pods' included (Kubernetes leaves ipBlocks that
cover pod IPs to the implementation; Calico matches them the same way). The run is IPv4 only:
an IPv6 `ipBlock` is accepted and matches nothing, as it would match no IPv4 packet in a
dual-stack cluster.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.localrun.model import ObjectReference, PodAddress

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
# The API server puts this label on every namespace; namespaceSelectors rely on it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
# The sets that record dropped flows: NetworkPolicy denials, and traffic leaving the run.
DENIED_SET = "denied"
OUTSIDE_SET = "outside"
DEFAULT_DENIAL_TIMEOUT_SECONDS = 3600
DEFAULT_DENIAL_SET_SIZE = 65536

Protocol = Literal["TCP", "UDP", "SCTP"]
Direction = Literal["ingress", "egress"]
Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
DenialReason = Literal["policy", "outside"]

_ALL_ADDRESSES = ipaddress.IPv4Network("0.0.0.0/0")
_LAST_PORT = 65535
# IANA_SVC_NAME, as the API server validates a named port.
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_NFT_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_PROTOCOL_NUMBERS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "IPV6-ICMP", 132: "SCTP"}
_PORT_PROTOCOLS = frozenset(PROTOCOLS)

Interval = tuple[int, int]


# -- label selectors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One `matchExpressions` entry; `matchLabels` entries become `In` with one value."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            # Kubernetes: NotIn also matches objects without the key.
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """A metav1.LabelSelector; no requirements (`{}`) selects everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)


# -- a NetworkPolicy, parsed ----------------------------------------------------------------------


@dataclass(frozen=True)
class IpBlock:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    excepts: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True)
class SelectorPeer:
    """`podSelector` and/or `namespaceSelector` in one peer: both must match (AND).

    No namespaceSelector: the policy's own namespace. No podSelector: every pod.
    """

    pod_selector: LabelSelector | None
    namespace_selector: LabelSelector | None


Peer = IpBlock | SelectorPeer


@dataclass(frozen=True)
class PortSpec:
    protocol: Protocol
    # None: every port of the protocol; a string is a container port's name.
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    # None: any peer (`from`/`to` missing or empty); several peers: any of them (OR).
    peers: tuple[Peer, ...] | None
    # None: every protocol and port (`ports` missing or empty).
    ports: tuple[PortSpec, ...] | None


@dataclass(frozen=True)
class Policy:
    reference: ObjectReference
    pod_selector: LabelSelector
    # None: the policy is not of that type, so it does not isolate that direction.
    ingress: tuple[Rule, ...] | None
    egress: tuple[Rule, ...] | None

    @property
    def namespace(self) -> str:
        return self.reference.namespace

    def rules(self, direction: Direction) -> tuple[Rule, ...] | None:
        return self.ingress if direction == "ingress" else self.egress


class _Reader:
    """Field checks of one NetworkPolicy, naming it and the field path in every error."""

    def __init__(self, reference: ObjectReference) -> None:
        self.reference = reference

    def fail(self, path: str, problem: str) -> UnsupportedManifest:
        return UnsupportedManifest(self.reference, path, problem)

    def mapping(self, value: object, path: str, allowed: Iterable[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a mapping, found {_type_name(value)}")
        unknown = sorted(str(key) for key in value if key not in set(allowed))
        if unknown:
            raise self.fail(
                _join(path, unknown[0]),
                f"not a field the local run knows (known: {', '.join(sorted(allowed))})",
            )
        return value

    def sequence(self, value: object, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list, found {_type_name(value)}")
        return value

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, found {_type_name(value)}")
        return value

    def selector(self, value: object, path: str) -> LabelSelector:
        if value is None:
            return LabelSelector()
        selector = self.mapping(value, path, ("matchLabels", "matchExpressions"))
        requirements: list[Requirement] = []
        match_labels = selector.get("matchLabels")
        if match_labels is not None:
            if not isinstance(match_labels, Mapping):
                raise self.fail(
                    _join(path, "matchLabels"),
                    f"must be a mapping, found {_type_name(match_labels)}",
                )
            for key, label_value in match_labels.items():
                requirements.append(
                    Requirement(
                        self.string(key, _join(path, "matchLabels")),
                        "In",
                        frozenset({self.string(label_value, _join(path, f"matchLabels.{key}"))}),
                    )
                )
        expressions = selector.get("matchExpressions")
        if expressions is not None:
            for index, expression in enumerate(
                self.sequence(expressions, _join(path, "matchExpressions"))
            ):
                requirements.append(
                    self.requirement(expression, f"{_join(path, 'matchExpressions')}[{index}]")
                )
        return LabelSelector(tuple(requirements))

    def requirement(self, value: object, path: str) -> Requirement:
        expression = self.mapping(value, path, ("key", "operator", "values"))
        if "key" not in expression:
            raise self.fail(_join(path, "key"), "missing")
        key = self.string(expression["key"], _join(path, "key"))
        operator = expression.get("operator")
        raw_values = expression.get("values")
        values = (
            []
            if raw_values is None
            else [
                self.string(item, f"{_join(path, 'values')}[{index}]")
                for index, item in enumerate(self.sequence(raw_values, _join(path, "values")))
            ]
        )
        if operator in ("In", "NotIn"):
            if not values:
                raise self.fail(_join(path, "values"), f"{operator} needs at least one value")
            return Requirement(key, operator, frozenset(values))
        if operator in ("Exists", "DoesNotExist"):
            if values:
                raise self.fail(_join(path, "values"), f"{operator} takes no values")
            return Requirement(key, operator)
        raise self.fail(
            _join(path, "operator"),
            f"{operator!r} is not one of In, NotIn, Exists, DoesNotExist",
        )

    def network(self, value: object, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        text = self.string(value, path)
        try:
            # Host bits may be set, as Go's net.ParseCIDR (the API server's check) allows.
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise self.fail(path, f"{text!r} is not a CIDR such as 10.0.0.0/8") from None

    def peer(self, value: object, path: str) -> Peer:
        peer = self.mapping(value, path, ("podSelector", "namespaceSelector", "ipBlock"))
        present = [key for key in ("podSelector", "namespaceSelector", "ipBlock") if key in peer]
        if not present:
            raise self.fail(path, "a peer needs podSelector, namespaceSelector or ipBlock")
        if "ipBlock" in peer:
            if len(present) > 1:
                raise self.fail(path, "ipBlock cannot be combined with a selector in one peer")
            return self.ip_block(peer["ipBlock"], _join(path, "ipBlock"))
        return SelectorPeer(
            pod_selector=(
                self.selector(peer["podSelector"], _join(path, "podSelector"))
                if "podSelector" in peer
                else None
            ),
            namespace_selector=(
                self.selector(peer["namespaceSelector"], _join(path, "namespaceSelector"))
                if "namespaceSelector" in peer
                else None
            ),
        )

    def ip_block(self, value: object, path: str) -> IpBlock:
        block = self.mapping(value, path, ("cidr", "except"))
        if "cidr" not in block:
            raise self.fail(_join(path, "cidr"), "missing")
        network = self.network(block["cidr"], _join(path, "cidr"))
        excepts: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        if block.get("except") is not None:
            for index, item in enumerate(self.sequence(block["except"], _join(path, "except"))):
                item_path = f"{_join(path, 'except')}[{index}]"
                excluded = self.network(item, item_path)
                if (
                    excluded.version != network.version
                    or not excluded.subnet_of(network)  # type: ignore[arg-type]
                    or excluded.prefixlen <= network.prefixlen
                ):
                    raise self.fail(item_path, f"{excluded} is not a strict subset of {network}")
                excepts.append(excluded)
        return IpBlock(network, tuple(excepts))

    def port(self, value: object, path: str) -> PortSpec:
        entry = self.mapping(value, path, ("protocol", "port", "endPort"))
        protocol = entry.get("protocol", "TCP")
        if protocol not in PROTOCOLS:
            raise self.fail(_join(path, "protocol"), f"{protocol!r} is not one of TCP, UDP, SCTP")
        port = entry.get("port")
        end_port = entry.get("endPort")
        if isinstance(port, bool) or not isinstance(port, int | str | None):
            raise self.fail(_join(path, "port"), f"must be a number or a name, found {port!r}")
        if isinstance(port, int) and not 1 <= port <= _LAST_PORT:
            raise self.fail(_join(path, "port"), f"{port} is not between 1 and {_LAST_PORT}")
        if isinstance(port, str) and (
            not _PORT_NAME.match(port) or "--" in port or not re.search(r"[a-z]", port)
        ):
            raise self.fail(
                _join(path, "port"),
                f"{port!r} is not a port name (lowercase letters, digits and '-', at most 15, "
                "at least one letter)",
            )
        if end_port is not None:
            if isinstance(end_port, bool) or not isinstance(end_port, int):
                raise self.fail(_join(path, "endPort"), f"must be a number, found {end_port!r}")
            if not isinstance(port, int):
                raise self.fail(_join(path, "endPort"), "needs a numeric port to start from")
            if not port <= end_port <= _LAST_PORT:
                raise self.fail(
                    _join(path, "endPort"), f"{end_port} is not between port {port} and 65535"
                )
        return PortSpec(protocol, port, end_port)

    def rule(self, value: object, path: str, peers_field: str) -> Rule:
        rule = self.mapping(value, path, (peers_field, "ports"))
        peers: tuple[Peer, ...] | None = None
        if rule.get(peers_field):
            peers = tuple(
                self.peer(item, f"{_join(path, peers_field)}[{index}]")
                for index, item in enumerate(
                    self.sequence(rule[peers_field], _join(path, peers_field))
                )
            )
        elif peers_field in rule and rule[peers_field] not in (None, []):
            raise self.fail(_join(path, peers_field), "must be a list of peers")
        ports: tuple[PortSpec, ...] | None = None
        if rule.get("ports"):
            ports = tuple(
                self.port(item, f"{_join(path, 'ports')}[{index}]")
                for index, item in enumerate(self.sequence(rule["ports"], _join(path, "ports")))
            )
        elif "ports" in rule and rule["ports"] not in (None, []):
            raise self.fail(_join(path, "ports"), "must be a list of ports")
        return Rule(peers, ports)


def parse_network_policy(document: Mapping[str, Any]) -> Policy:
    """One rendered NetworkPolicy, checked; anything the run cannot honour raises
    `UnsupportedManifest` naming the policy and the field."""
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    name = str(metadata.get("name") or "")
    namespace = str(metadata.get("namespace") or "")
    reader = _Reader(ObjectReference(KIND, namespace, name))
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise reader.fail(
            "apiVersion",
            f"{document.get('apiVersion')}/{document.get('kind')} is not {API_VERSION} {KIND}",
        )
    if not name:
        raise reader.fail("metadata.name", "missing")
    if not namespace:
        raise reader.fail(
            "metadata.namespace", "missing: a rendered policy must name its namespace"
        )
    spec = reader.mapping(
        document.get("spec"), "spec", ("podSelector", "policyTypes", "ingress", "egress")
    )
    if "podSelector" not in spec:
        raise reader.fail("spec.podSelector", "missing ({} selects every pod)")
    pod_selector = reader.selector(spec["podSelector"], "spec.podSelector")
    rules: dict[str, tuple[Rule, ...]] = {}
    for field, peers_field in (("ingress", "from"), ("egress", "to")):
        raw = spec.get(field)
        if raw is None:
            rules[field] = ()
            continue
        rules[field] = tuple(
            reader.rule(item, f"spec.{field}[{index}]", peers_field)
            for index, item in enumerate(reader.sequence(raw, f"spec.{field}"))
        )
    raw_types = spec.get("policyTypes")
    if raw_types:
        types = reader.sequence(raw_types, "spec.policyTypes")
        for index, item in enumerate(types):
            if item not in ("Ingress", "Egress"):
                raise reader.fail(
                    f"spec.policyTypes[{index}]", f"{item!r} is not Ingress or Egress"
                )
        policy_types = set(types)
    else:
        # The API server's default: Ingress always, Egress only when there are egress rules
        # (an empty `egress: []` does not count).
        policy_types = {"Ingress"} | ({"Egress"} if rules["egress"] else set())
    # Rules of a type missing from policyTypes have no effect, as in Kubernetes.
    return Policy(
        reference=reader.reference,
        pod_selector=pod_selector,
        ingress=rules["ingress"] if "Ingress" in policy_types else None,
        egress=rules["egress"] if "Egress" in policy_types else None,
    )


# -- allowed flows ------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class PortRange:
    protocol: str
    first: int
    last: int

    def __str__(self) -> str:
        if self.first == 0 and self.last == _LAST_PORT:
            return self.protocol
        if self.first == self.last:
            return f"{self.protocol} {self.first}"
        return f"{self.protocol} {self.first}-{self.last}"


@dataclass(frozen=True)
class Allowance:
    """What one rule of one policy lets through for one pod, in one direction: traffic
    between `pod` and any address of `peers`, on `ports`."""

    pod: str
    peers: tuple[ipaddress.IPv4Network, ...]
    # None: every protocol and port (ICMP included).
    ports: tuple[PortRange, ...] | None
    policy: ObjectReference

    def admits(self, peer: str, protocol: str, port: int | None) -> bool:
        address = ipaddress.IPv4Address(peer)
        if not any(address in network for network in self.peers):
            return False
        if self.ports is None:
            return True
        return port is not None and any(
            entry.protocol == protocol and entry.first <= port <= entry.last for entry in self.ports
        )


@dataclass(frozen=True)
class AllowedFlows:
    """Every pod's isolation and allowances, by pod IP."""

    pods: tuple[PodAddress, ...]
    ingress_isolated: frozenset[str]
    egress_isolated: frozenset[str]
    ingress: tuple[Allowance, ...]
    egress: tuple[Allowance, ...]

    def allows(self, source: str, destination: str, protocol: str, port: int | None) -> bool:
        """Whether the policies let a new connection through (source and destination are IPs;
        either may be a non-pod address). Leaving the run is not a policy matter: see
        `nftables_ruleset`."""
        return not self.denying_sides(source, destination, protocol, port)

    def denying_sides(
        self, source: str, destination: str, protocol: str, port: int | None
    ) -> list[Direction]:
        """Which of the source's egress and the destination's ingress refuse the flow."""
        sides: list[Direction] = []
        if source in self.egress_isolated and not any(
            allowance.pod == source and allowance.admits(destination, protocol, port)
            for allowance in self.egress
        ):
            sides.append("egress")
        if destination in self.ingress_isolated and not any(
            allowance.pod == destination and allowance.admits(source, protocol, port)
            for allowance in self.ingress
        ):
            sides.append("ingress")
        return sides


def allowed_flows(
    policies: Sequence[Mapping[str, Any]],
    pods: Sequence[PodAddress],
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> AllowedFlows:
    """networking.k8s.io/v1 NetworkPolicy semantics over the run's pods.

    `policies` are rendered NetworkPolicy documents; `namespace_labels` the labels of each
    namespace (every namespace also carries `kubernetes.io/metadata.name`, as the API server
    sets it; the namespaces of pods and policies exist even when not listed).
    """
    parsed = [parse_network_policy(document) for document in policies]
    _check_pods(pods)
    namespaces: dict[str, dict[str, str]] = {}
    for name in [
        *namespace_labels,
        *(pod.namespace for pod in pods),
        *(p.namespace for p in parsed),
    ]:
        labels = dict(namespace_labels.get(name, {}))
        labels[NAMESPACE_NAME_LABEL] = name
        namespaces[name] = labels
    isolated: dict[Direction, set[str]] = {"ingress": set(), "egress": set()}
    allowances: dict[Direction, list[Allowance]] = {"ingress": [], "egress": []}
    for pod in pods:
        labels = pod.label_map
        selecting = [
            policy
            for policy in parsed
            if policy.namespace == pod.namespace and policy.pod_selector.matches(labels)
        ]
        for direction in ("ingress", "egress"):
            for policy in selecting:
                rules = policy.rules(direction)
                if rules is None:
                    continue
                isolated[direction].add(pod.ip)
                for rule in rules:
                    allowances[direction].extend(
                        _rule_allowances(direction, pod, rule, policy, pods, namespaces)
                    )
    return AllowedFlows(
        pods=tuple(pods),
        ingress_isolated=frozenset(isolated["ingress"]),
        egress_isolated=frozenset(isolated["egress"]),
        ingress=tuple(allowances["ingress"]),
        egress=tuple(allowances["egress"]),
    )


def _check_pods(pods: Sequence[PodAddress]) -> None:
    seen: dict[str, PodAddress] = {}
    for pod in pods:
        try:
            ipaddress.IPv4Address(pod.ip)
        except ValueError:
            raise LocalRunError(
                f"pod {pod.namespace}/{pod.name}: {pod.ip!r} is not an IPv4 address"
            ) from None
        if pod.ip in seen:
            other = seen[pod.ip]
            raise LocalRunError(
                f"pods {other.namespace}/{other.name} and {pod.namespace}/{pod.name} "
                f"share the address {pod.ip}"
            )
        seen[pod.ip] = pod


def _rule_allowances(
    direction: Direction,
    pod: PodAddress,
    rule: Rule,
    policy: Policy,
    pods: Sequence[PodAddress],
    namespaces: Mapping[str, Mapping[str, str]],
) -> list[Allowance]:
    peer_intervals = _peer_intervals(rule.peers, policy.namespace, pods, namespaces)
    if not peer_intervals:
        return []
    peers = _networks(peer_intervals)
    if rule.ports is None:
        return [Allowance(pod.ip, peers, None, policy.reference)]
    numbered = [
        PortRange(spec.protocol, spec.port, spec.end_port or spec.port)
        if isinstance(spec.port, int)
        else PortRange(spec.protocol, 0, _LAST_PORT)
        for spec in rule.ports
        if not isinstance(spec.port, str)
    ]
    named = [spec for spec in rule.ports if isinstance(spec.port, str)]
    result: list[Allowance] = []
    if direction == "ingress":
        # The destination is the selected pod: its own container ports name the ports.
        numbered.extend(
            PortRange(spec.protocol, number, number)
            for spec in named
            if (number := _named_port(pod, spec)) is not None
        )
    else:
        # The destination is the peer: each peer pod names the port for itself, and a peer
        # that is no pod (or has no such port) matches nothing.
        for peer_pod in pods:
            if not _contains(peer_intervals, int(ipaddress.IPv4Address(peer_pod.ip))):
                continue
            resolved = tuple(
                sorted(
                    {
                        PortRange(spec.protocol, number, number)
                        for spec in named
                        if (number := _named_port(peer_pod, spec)) is not None
                    }
                )
            )
            if resolved:
                result.append(
                    Allowance(
                        pod.ip,
                        (ipaddress.IPv4Network(peer_pod.ip),),
                        resolved,
                        policy.reference,
                    )
                )
    if numbered:
        result.insert(0, Allowance(pod.ip, peers, tuple(sorted(set(numbered))), policy.reference))
    return result


def _named_port(pod: PodAddress, spec: PortSpec) -> int | None:
    for port in pod.ports:
        if port.name == spec.port and port.protocol == spec.protocol:
            return port.number
    return None


def _peer_intervals(
    peers: tuple[Peer, ...] | None,
    policy_namespace: str,
    pods: Sequence[PodAddress],
    namespaces: Mapping[str, Mapping[str, str]],
) -> list[Interval]:
    if peers is None:
        return [_interval(_ALL_ADDRESSES)]
    intervals: list[Interval] = []
    for peer in peers:
        if isinstance(peer, IpBlock):
            if isinstance(peer.network, ipaddress.IPv4Network):
                remaining = [_interval(peer.network)]
                for excluded in peer.excepts:
                    remaining = _subtract(remaining, _interval(excluded))
                intervals.extend(remaining)
            continue
        for candidate in pods:
            if peer.namespace_selector is None:
                in_namespace = candidate.namespace == policy_namespace
            else:
                in_namespace = peer.namespace_selector.matches(namespaces[candidate.namespace])
            if in_namespace and (
                peer.pod_selector is None or peer.pod_selector.matches(candidate.label_map)
            ):
                address = int(ipaddress.IPv4Address(candidate.ip))
                intervals.append((address, address))
    return _merge(intervals)


# -- intervals of addresses and ports -------------------------------------------------------------


def _interval(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Interval:
    return int(network.network_address), int(network.broadcast_address)


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _subtract(intervals: list[Interval], removed: Interval) -> list[Interval]:
    result: list[Interval] = []
    for first, last in intervals:
        if removed[1] < first or last < removed[0]:
            result.append((first, last))
            continue
        if first < removed[0]:
            result.append((first, removed[0] - 1))
        if removed[1] < last:
            result.append((removed[1] + 1, last))
    return result


def _contains(intervals: Sequence[Interval], value: int) -> bool:
    return any(first <= value <= last for first, last in intervals)


def _networks(intervals: Iterable[Interval]) -> tuple[ipaddress.IPv4Network, ...]:
    networks: list[ipaddress.IPv4Network] = []
    for first, last in _merge(intervals):
        networks.extend(
            ipaddress.summarize_address_range(
                ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)
            )
        )
    return tuple(networks)


def _disjoint_boxes(
    boxes: Sequence[tuple[Interval, Interval]],
) -> list[tuple[Interval, Interval]]:
    """(addresses, ports) boxes cut into disjoint boxes with the same union.

    nftables refuses an interval-set element that overlaps another one, so the allowed
    (peer, port) pairs of one pod and protocol are made disjoint first. One axis is cut at
    every box edge, each slice gets the merged intervals of the boxes covering it on the other
    axis, and adjacent slices with the same intervals are joined again. Both axes are tried and
    the shorter result is kept: "any address on 443" next to "one pod on 5000" stays two boxes
    when cut along ports, where cutting along addresses would split the any-address box around
    the pod.
    """
    by_addresses = _slice_along_first(boxes)
    by_ports = [
        (addresses, ports)
        for ports, addresses in _slice_along_first(
            [(ports, addresses) for addresses, ports in boxes]
        )
    ]
    return by_ports if len(by_ports) < len(by_addresses) else by_addresses


def _slice_along_first(
    boxes: Sequence[tuple[Interval, Interval]],
) -> list[tuple[Interval, Interval]]:
    cuts = sorted({first for (first, _), _ in boxes} | {last + 1 for (_, last), _ in boxes})
    slices: list[tuple[Interval, tuple[Interval, ...]]] = []
    for start, next_cut in itertools.pairwise(cuts):
        end = next_cut - 1
        others = tuple(
            _merge(other for (first, last), other in boxes if first <= start and end <= last)
        )
        if not others:
            continue
        if slices and slices[-1][1] == others and slices[-1][0][1] + 1 == start:
            slices[-1] = ((slices[-1][0][0], end), others)
        else:
            slices.append(((start, end), others))
    return [(axis, other) for axis, others in slices for other in others]


# -- the nftables ruleset -----------------------------------------------------------------------


def nftables_ruleset(
    table: str,
    flows: AllowedFlows,
    pods: Sequence[PodAddress],
    pod_cidr: str,
    run_hosts_cidr: str,
    *,
    node_address: str | None = None,
    service_cidr: str | None = None,
    denial_timeout_seconds: int = DEFAULT_DENIAL_TIMEOUT_SECONDS,
    denial_set_size: int = DEFAULT_DENIAL_SET_SIZE,
) -> str:
    """The text for `nft -f` that enforces `flows` (computed for `pods`) in table
    `inet <table>`.

    `pod_cidr` and `run_hosts_cidr` are the run's addresses: nothing in them may talk to an
    address outside them. `node_address` is the host as pods see it: given, pods and run hosts
    reach the host at that address only (where their egress policies let them), since its
    other addresses are the machine's real network. `service_cidr` holds the Service VIPs:
    given, a connection to a VIP that DNAT left alone (no ready endpoint) is refused, as
    kube-proxy refuses it, rather than dropped or recorded as leaving the run.

    Loading it again (pods came or went) is one transaction: the rules and the allowed sets are
    flushed and refilled, so packets see either the old or the new rules, established
    connections carry on, and the denial records (sets `denied` and `outside`) are kept. The
    denial sets' timeout and size must stay the same between loads (nft refuses to redefine a
    set). Remove everything with `nft delete table inet <table>`.
    """
    if not _NFT_IDENTIFIER.match(table):
        raise LocalRunError(f"nftables table name {table!r}: letters, digits and '_' only")
    pod_network = _ipv4_network(pod_cidr, "the pod range")
    hosts_network = _ipv4_network(run_hosts_cidr, "the run hosts' range")
    ranges = [("the pod range", pod_network), ("the run hosts' range", hosts_network)]
    if service_cidr is not None:
        ranges.append(("the Service range", _ipv4_network(service_cidr, "the Service range")))
    for (first_name, first), (second_name, second) in itertools.combinations(ranges, 2):
        if first.overlaps(second):
            raise LocalRunError(f"{first_name} {first} overlaps {second_name} {second}")
    if node_address is not None:
        try:
            ipaddress.IPv4Address(node_address)
        except ValueError:
            raise LocalRunError(f"node address {node_address!r} is not an IPv4 address") from None
    if {pod.ip for pod in pods} != {pod.ip for pod in flows.pods}:
        raise LocalRunError("the flows were computed for other pods than these")
    for pod in pods:
        if ipaddress.IPv4Address(pod.ip) not in pod_network:
            raise LocalRunError(
                f"pod {pod.namespace}/{pod.name}: {pod.ip} is outside the pod range {pod_network}"
            )
    if denial_timeout_seconds < 1 or denial_set_size < 1:
        raise LocalRunError("the denial sets need a positive timeout and size")

    key = "ipv4_addr . ipv4_addr . inet_proto . inet_service"
    record = (
        f"type {key}; flags dynamic,timeout; timeout {denial_timeout_seconds}s; "
        f"size {denial_set_size};"
    )
    declarations = {
        "run_ranges": "type ipv4_addr; flags interval;",
        "ingress_isolated": "type ipv4_addr;",
        "egress_isolated": "type ipv4_addr;",
        "ingress_any": "type ipv4_addr . ipv4_addr; flags interval;",
        "ingress_ports": f"type {key}; flags interval;",
        "egress_any": "type ipv4_addr . ipv4_addr; flags interval;",
        "egress_ports": f"type {key}; flags interval;",
    }
    base_chains = {
        "forward_filter": "type filter hook forward priority filter; policy accept;",
        "input_filter": "type filter hook input priority filter; policy accept;",
        # After DNAT (priority dstnat), before routing: a blackhole route for the run's block
        # would drop the packet before FORWARD, and a client would wait instead of being refused.
        # Declared even without a Service range, so that a later load flushes it all the same.
        "unserved_services": "type filter hook prerouting priority filter; policy accept;",
    }
    regular_chains = ("egress_check", "ingress_check", "deny_policy", "deny_outside")
    elements = {
        "run_ranges": [str(network) for network in sorted(network for _, network in ranges)],
        "ingress_isolated": sorted(flows.ingress_isolated, key=ipaddress.IPv4Address),
        "egress_isolated": sorted(flows.egress_isolated, key=ipaddress.IPv4Address),
        "ingress_any": _any_port_elements(flows.ingress),
        "ingress_ports": _port_elements(flows.ingress),
        "egress_any": _any_port_elements(flows.egress),
        "egress_ports": _port_elements(flows.egress),
    }

    lines = [
        f"# NetworkPolicies of the local run, enforced in table inet {table}.",
        "# Loading this file again replaces the rules and the allowed sets in one transaction;",
        f"# the records of dropped flows (sets {DENIED_SET}, {OUTSIDE_SET}) are kept.",
        "#",
        "# pod address     isolated for     pod",
    ]
    for pod in sorted(pods, key=lambda pod: ipaddress.IPv4Address(pod.ip)):
        isolation = "+".join(
            name
            for name, members in (
                ("ingress", flows.ingress_isolated),
                ("egress", flows.egress_isolated),
            )
            if pod.ip in members
        )
        lines.append(f"# {pod.ip:<15}  {isolation or '-':<15}  {pod.namespace}/{pod.name}")
    lines += ["", f"table inet {table} {{"]
    for name, declaration in declarations.items():
        lines.append(f"\tset {name} {{ {declaration} }}")
    for name in (DENIED_SET, OUTSIDE_SET):
        lines.append(f"\tset {name} {{ {record} }}")
    for name, declaration in base_chains.items():
        lines.append(f"\tchain {name} {{ {declaration} }}")
    for name in regular_chains:
        lines.append(f"\tchain {name} {{ }}")
    lines += ["}", ""]
    for name in (*base_chains, *regular_chains):
        lines.append(f"flush chain inet {table} {name}")
    for name in declarations:
        lines.append(f"flush set inet {table} {name}")
    lines.append("")
    for name, members in elements.items():
        if members:
            joined = ",\n\t".join(members)
            lines.append(f"add element inet {table} {name} {{\n\t{joined}\n}}")
    node = (
        [
            "\t\t# The host's other addresses are the machine's real network.",
            f"\t\tip saddr @run_ranges ip daddr != {node_address} jump deny_outside",
        ]
        if node_address is not None
        else []
    )
    lines += [
        "",
        f"table inet {table} {{",
        "\tchain forward_filter {",
        "\t\tct state established,related accept",
        "\t\t# Nothing of the run talks to the real network or the internet, whatever a policy",
        "\t\t# says; and nothing from there reaches the run (the host's own traffic does not",
        "\t\t# cross this hook).",
        "\t\tip saddr @run_ranges ip daddr != @run_ranges jump deny_outside",
        "\t\tip daddr @run_ranges ip saddr != @run_ranges drop",
        "\t\tip saddr @egress_isolated jump egress_check",
        "\t\tip daddr @ingress_isolated jump ingress_check",
        "\t}",
        "\tchain input_filter {",
        "\t\t# A pod reaches the host itself only where its egress policies let it.",
        "\t\tct state established,related accept",
        *node,
        "\t\tip saddr @egress_isolated jump egress_check",
        "\t}",
        "\tchain egress_check {",
        "\t\tip saddr . ip daddr @egress_any return",
        "\t\tip saddr . ip daddr . meta l4proto . th dport @egress_ports return",
        "\t\tjump deny_policy",
        "\t}",
        "\tchain ingress_check {",
        "\t\tip daddr . ip saddr @ingress_any return",
        "\t\tip daddr . ip saddr . meta l4proto . th dport @ingress_ports return",
        "\t\tjump deny_policy",
        "\t}",
        *(
            [
                "\tchain unserved_services {",
                "\t\t# A VIP still here had no ready endpoint to DNAT to: refused, as kube-proxy",
                "\t\t# refuses it.",
                f"\t\tip daddr {service_cidr} meta l4proto tcp reject with tcp reset",
                f"\t\tip daddr {service_cidr} reject",
                "\t}",
            ]
            if service_cidr is not None
            else []
        ),
        *_record_chain("deny_policy", DENIED_SET),
        *_record_chain("deny_outside", OUTSIDE_SET),
        "}",
    ]
    return "\n".join(lines) + "\n"


def _record_chain(chain: str, record_set: str) -> list[str]:
    # The drop is a rule of its own: when the record set is full, `update` fails and ends its
    # rule, and the flow must still be dropped. Protocols without ports are recorded with 0.
    return [
        f"\tchain {chain} {{",
        f"\t\tmeta l4proto {{ tcp, udp, sctp }} update @{record_set} "
        "{ ip saddr . ip daddr . meta l4proto . th dport }",
        f"\t\tmeta l4proto != {{ tcp, udp, sctp }} update @{record_set} "
        "{ ip saddr . ip daddr . meta l4proto . 0 }",
        "\t\tdrop",
        "\t}",
    ]


def _ipv4_network(text: str, what: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text)
    except ValueError:
        raise LocalRunError(
            f"{what}: {text!r} is not an IPv4 network such as 10.0.0.0/16"
        ) from None


def _address_text(interval: Interval) -> str:
    first, last = (ipaddress.IPv4Address(value) for value in interval)
    if first == last:
        return str(first)
    networks = list(ipaddress.summarize_address_range(first, last))
    return str(networks[0]) if len(networks) == 1 else f"{first}-{last}"


def _port_text(interval: Interval) -> str:
    return str(interval[0]) if interval[0] == interval[1] else f"{interval[0]}-{interval[1]}"


def _any_port_elements(allowances: Iterable[Allowance]) -> list[str]:
    by_pod: dict[str, list[Interval]] = {}
    for allowance in allowances:
        if allowance.ports is None:
            by_pod.setdefault(allowance.pod, []).extend(map(_interval, allowance.peers))
    return [
        f"{pod} . {_address_text(interval)}"
        for pod in sorted(by_pod, key=ipaddress.IPv4Address)
        for interval in _merge(by_pod[pod])
    ]


def _port_elements(allowances: Iterable[Allowance]) -> list[str]:
    boxes: dict[tuple[str, str], list[tuple[Interval, Interval]]] = {}
    for allowance in allowances:
        for port_range in allowance.ports or ():
            boxes.setdefault((allowance.pod, port_range.protocol), []).extend(
                (_interval(peer), (port_range.first, port_range.last)) for peer in allowance.peers
            )
    return [
        f"{pod} . {_address_text(addresses)} . {protocol.lower()} . {_port_text(ports)}"
        for pod, protocol in sorted(
            boxes, key=lambda item: (ipaddress.IPv4Address(item[0]), item[1])
        )
        for addresses, ports in _disjoint_boxes(boxes[(pod, protocol)])
    ]


# -- what was dropped ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Denial:
    """A flow the rules dropped: by a NetworkPolicy, or because it left the run."""

    source: str
    destination: str
    # TCP, UDP, SCTP, ICMP, or the protocol number.
    protocol: str
    # None for protocols without ports.
    port: int | None
    reason: DenialReason
    # Seconds until the record expires, where nft said.
    expires_seconds: int | None = None


def parse_denials(nft_json: str) -> list[Denial]:
    """The records in `nft -j list set inet <table> denied` (or `outside`, or a whole
    `list table`) output. `{}` (nothing listed) gives none."""
    try:
        document = json.loads(nft_json)
    except json.JSONDecodeError as error:
        raise LocalRunError(f"nft's JSON output does not parse: {error}") from None
    if not isinstance(document, dict):
        raise LocalRunError("nft's JSON output: expected an object with key 'nftables'")
    denials: list[Denial] = []
    for item in document.get("nftables", []):
        described = item.get("set") if isinstance(item, dict) else None
        if not isinstance(described, dict) or described.get("name") not in (
            DENIED_SET,
            OUTSIDE_SET,
        ):
            continue
        reason: DenialReason = "policy" if described["name"] == DENIED_SET else "outside"
        for element in described.get("elem", []):
            denials.append(_denial(element, reason))
    return denials


def _denial(element: object, reason: DenialReason) -> Denial:
    expires: int | None = None
    value = element
    if isinstance(element, dict) and "elem" in element:
        wrapper = element["elem"]
        value = wrapper.get("val") if isinstance(wrapper, dict) else None
        expires_value = wrapper.get("expires") if isinstance(wrapper, dict) else None
        expires = expires_value if isinstance(expires_value, int) else None
    parts = value.get("concat") if isinstance(value, dict) else None
    if not isinstance(parts, list) or len(parts) != 4:
        raise LocalRunError(
            f"a record of set {reason}: expected address . address . protocol . port, "
            f"found {element!r}"
        )
    source, destination, raw_protocol, raw_port = parts
    if isinstance(raw_protocol, int):
        protocol = _PROTOCOL_NUMBERS.get(raw_protocol, str(raw_protocol))
    else:
        protocol = str(raw_protocol).upper()
    if isinstance(raw_port, str) and raw_port.isdigit():
        raw_port = int(raw_port)
    if not isinstance(raw_port, int):
        raise LocalRunError(
            f"a record of set {reason}: port {raw_port!r} is not a number (list with `nft -j`, "
            "without -S)"
        )
    return Denial(
        source=str(source),
        destination=str(destination),
        protocol=protocol,
        port=raw_port if protocol in _PORT_PROTOCOLS else None,
        reason=reason,
        expires_seconds=expires,
    )


def describe_denial(
    denial: Denial, pods: Sequence[PodAddress], flows: AllowedFlows | None = None
) -> str:
    """A line for a person: `promoter-5d9c (ml-platform) -> mlflow-tracking-7f8b (ml-platform)
    TCP 5000: denied by NetworkPolicy`. Given the current flows, it says which side refused."""
    by_address = {pod.ip: pod for pod in pods}

    def name(address: str) -> str:
        pod = by_address.get(address)
        return f"{pod.name} ({pod.namespace})" if pod else address

    what = denial.protocol if denial.port is None else f"{denial.protocol} {denial.port}"
    line = f"{name(denial.source)} -> {name(denial.destination)} {what}"
    if denial.reason == "outside":
        return f"{line}: leaves the run"
    because = ""
    if flows is not None:
        sides = flows.denying_sides(denial.source, denial.destination, denial.protocol, denial.port)
        named = [
            f"egress of {name(denial.source)}"
            if side == "egress"
            else f"ingress of {name(denial.destination)}"
            for side in sides
        ]
        if named:
            because = f" ({' and '.join(named)})"
    return f"{line}: denied by NetworkPolicy{because}"


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def _type_name(value: object) -> str:
    return "nothing" if value is None else type(value).__name__

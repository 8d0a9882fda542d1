"""NetworkPolicies in the local run: the platform's own policies allow exactly the flows its
components need, every NetworkPolicy rule means what it means in Kubernetes, and the nftables
rules enforce them between real network namespaces."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlopsctl.base import kustomize, toolchain
from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.base.resources import parse_render
from mlopsctl.localrun import network_policy
from mlopsctl.localrun.model import ContainerPort, PodAddress
from mlopsctl.localrun.network_policy import AllowedFlows, Denial, allowed_flows
from tests.support.paths import REPOSITORY, TOOLS_DIR

LOCAL_COMPONENTS = (
    "platform",
    "mlflow-tracking",
    "model-server",
    "postgres",
    "promoter",
    "streamlit",
)
GIT_HOST = "10.213.192.2"  # a host of the run, not a pod
NODE = "10.213.255.1"  # the host itself, as pods see it


# -- the platform's policies, rendered for local --------------------------------------------------


@dataclass
class Platform:
    flows: AllowedFlows
    pods: dict[str, PodAddress] = field(default_factory=dict)

    def allows(self, source: str, destination: str, protocol: str, port: int | None) -> bool:
        return self.flows.allows(self.ip(source), self.ip(destination), protocol, port)

    def ip(self, name: str) -> str:
        return self.pods[name].ip if name in self.pods else name


def _template_pod(document: Mapping[str, Any], address: str) -> PodAddress:
    template = document["spec"]["template"]
    ports = tuple(
        ContainerPort(port.get("name"), port["containerPort"], port.get("protocol", "TCP"))
        for container in template["spec"]["containers"]
        for port in container.get("ports", [])
    )
    return PodAddress(
        namespace=document["metadata"]["namespace"],
        name=f"{document['metadata']['name']}-5d9c",
        labels=tuple(template["metadata"]["labels"].items()),
        ip=address,
        ports=ports,
    )


@pytest.fixture(scope="module")
def platform() -> Platform:
    roots = [f"overlays/local/{component}" for component in LOCAL_COMPONENTS]
    results = kustomize.render_roots(REPOSITORY, roots, toolchain.resolve(TOOLS_DIR))
    documents = [
        resource.body for result in results for resource in parse_render(result.root, result.output)
    ]
    policies = [document for document in documents if document["kind"] == "NetworkPolicy"]
    assert len(policies) == 8, [p["metadata"]["name"] for p in policies]
    addresses = (f"10.213.0.{index}" for index in range(2, 200))
    pods: dict[str, PodAddress] = {}
    for document in documents:
        if document["kind"] in ("Deployment", "Job"):
            pods[document["metadata"]["name"]] = _template_pod(document, next(addresses))
    [cluster] = [document for document in documents if document["kind"] == "Cluster"]
    # What CloudNativePG puts on an instance pod: its own labels plus inheritedMetadata.
    pods["postgres"] = PodAddress(
        namespace="ml-platform",
        name="postgres-1",
        labels=(
            ("cnpg.io/cluster", cluster["metadata"]["name"]),
            ("cnpg.io/instanceName", "postgres-1"),
            ("role", "primary"),
            *cluster["spec"]["inheritedMetadata"]["labels"].items(),
        ),
        ip=next(addresses),
        ports=(
            ContainerPort("postgresql", 5432),
            ContainerPort("metrics", 9187),
            ContainerPort("status", 8000),
        ),
    )
    pods["prometheus"] = PodAddress(
        "monitoring",
        "prometheus-0",
        (("app.kubernetes.io/name", "prometheus"),),
        next(addresses),
        (ContainerPort("web", 9090),),
    )
    pods["kube-dns"] = PodAddress(
        "kube-system",
        "coredns-7db6",
        (("k8s-app", "kube-dns"),),
        next(addresses),
        (ContainerPort("dns", 53, "UDP"), ContainerPort("dns-tcp", 53)),
    )
    pods["cnpg-operator"] = PodAddress(
        "cnpg-system",
        "cnpg-controller-manager-6b9f",
        (("app.kubernetes.io/name", "cloudnative-pg"),),
        next(addresses),
        (ContainerPort("webhook-server", 9443),),
    )
    [namespace] = [document for document in documents if document["kind"] == "Namespace"]
    namespace_labels = {
        namespace["metadata"]["name"]: namespace["metadata"].get("labels", {}),
        "monitoring": {},
        "kube-system": {},
        "cnpg-system": {},
    }
    return Platform(allowed_flows(policies, list(pods.values()), namespace_labels), pods)


PLATFORM_FLOWS = [
    # (source, destination, protocol, port, allowed)
    ("promoter", "mlflow-tracking", "TCP", 5000, True),
    ("model-server", "mlflow-tracking", "TCP", 5000, True),
    ("streamlit", "mlflow-tracking", "TCP", 5000, False),
    ("prometheus", "mlflow-tracking", "TCP", 5000, True),
    ("mlflow-tracking", "promoter", "TCP", 8080, True),
    ("mlflow-tracking", "promoter", "TCP", 9999, False),
    ("prometheus", "promoter", "TCP", 8080, True),
    ("streamlit", "model-server", "TCP", 8080, True),
    ("streamlit", "model-server", "TCP", 9090, False),
    ("prometheus", "model-server", "TCP", 8080, True),  # /metrics
    ("prometheus", "model-server", "TCP", 9090, False),
    ("prometheus", "streamlit", "TCP", 8501, False),
    ("mlflow-tracking", "postgres", "TCP", 5432, True),
    ("mlflow-db-upgrade", "postgres", "TCP", 5432, True),
    ("model-server", "postgres", "TCP", 5432, False),
    ("promoter", "postgres", "TCP", 5432, False),
    ("cnpg-operator", "postgres", "TCP", 8000, True),
    ("cnpg-operator", "postgres", "TCP", 5432, False),
    ("prometheus", "postgres", "TCP", 9187, True),  # CloudNativePG's metrics
    ("prometheus", "postgres", "TCP", 5432, False),
    ("postgres", NODE, "TCP", 6443, True),
    ("postgres", GIT_HOST, "TCP", 22, False),
    ("promoter", GIT_HOST, "TCP", 443, True),
    ("promoter", GIT_HOST, "TCP", 22, True),
    ("promoter", GIT_HOST, "TCP", 80, False),
    ("promoter-register-webhook", "mlflow-tracking", "TCP", 5000, True),
    ("mlflow-tracking", GIT_HOST, "TCP", 443, False),
    ("streamlit", "kube-dns", "UDP", 53, True),
    ("postgres", "kube-dns", "TCP", 53, True),
    ("mlflow-tracking", "kube-dns", "TCP", 8080, False),
    ("promoter", "mlflow-tracking", "ICMP", None, False),
    ("kube-dns", "prometheus", "TCP", 9090, True),
]


@pytest.mark.parametrize(("source", "destination", "protocol", "port", "allowed"), PLATFORM_FLOWS)
def test_the_platform_policies_allow_exactly_the_flows_the_components_need(
    platform: Platform,
    source: str,
    destination: str,
    protocol: str,
    port: int | None,
    allowed: bool,
) -> None:
    assert platform.allows(source, destination, protocol, port) is allowed


def test_every_platform_pod_is_isolated_both_ways_and_the_rest_is_not(platform: Platform) -> None:
    inside = {pod.ip for pod in platform.pods.values() if pod.namespace == "ml-platform"}
    assert platform.flows.ingress_isolated == inside
    assert platform.flows.egress_isolated == inside


def test_a_denial_says_which_side_refused(platform: Platform) -> None:
    streamlit, tracking = platform.pods["streamlit"], platform.pods["mlflow-tracking"]
    denial = Denial(streamlit.ip, tracking.ip, "TCP", 5000, "policy")
    assert network_policy.describe_denial(denial, list(platform.pods.values())) == (
        "streamlit-5d9c (ml-platform) -> mlflow-tracking-5d9c (ml-platform) TCP 5000: "
        "denied by NetworkPolicy"
    )
    assert network_policy.describe_denial(denial, list(platform.pods.values()), platform.flows) == (
        "streamlit-5d9c (ml-platform) -> mlflow-tracking-5d9c (ml-platform) TCP 5000: denied by "
        "NetworkPolicy (egress of streamlit-5d9c (ml-platform) and ingress of "
        "mlflow-tracking-5d9c (ml-platform))"
    )
    leaving = Denial(platform.ip("promoter"), "140.82.112.3", "TCP", 443, "outside")
    assert network_policy.describe_denial(leaving, list(platform.pods.values())) == (
        "promoter-5d9c (ml-platform) -> 140.82.112.3 TCP 443: leaves the run"
    )


def test_the_platform_ruleset_loads_into_nft(platform: Platform) -> None:
    _need_root_tools()
    ruleset = network_policy.nftables_ruleset(
        "mlopsctl_policy_check",
        platform.flows,
        list(platform.pods.values()),
        "10.213.0.0/17",
        "10.213.192.0/24",
        node_address=NODE,
        service_cidr="10.213.128.0/18",
    )
    checked = subprocess.run(
        ["nft", "-c", "-f", "-"], input=ruleset, text=True, capture_output=True
    )
    assert checked.returncode == 0, checked.stderr


# -- NetworkPolicy semantics, one at a time -----------------------------------------------------


def policy(name: str, spec: dict[str, Any], namespace: str = "demo") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def pod(
    name: str,
    address: str,
    labels: dict[str, str] | None = None,
    namespace: str = "demo",
    ports: tuple[ContainerPort, ...] = (),
) -> PodAddress:
    return PodAddress(namespace, name, tuple((labels or {"app": name}).items()), address, ports)


WEB = pod("web", "10.1.0.2", ports=(ContainerPort("http", 8080), ContainerPort("dns", 53, "UDP")))
API = pod("api", "10.1.0.3", ports=(ContainerPort("http", 9000),))
CLIENT = pod("client", "10.1.0.4")
OTHER_WEB = pod("web", "10.1.0.5", namespace="other", ports=(ContainerPort("http", 8080),))
OTHER_CLIENT = pod("client", "10.1.0.6", namespace="other")
TEAM_CLIENT = pod("client", "10.1.0.7", namespace="team")
TEAM_DB = pod("db", "10.1.0.8", namespace="team")
PODS = [WEB, API, CLIENT, OTHER_WEB, OTHER_CLIENT, TEAM_CLIENT, TEAM_DB]
NAMESPACES = {"demo": {"tier": "apps"}, "other": {"tier": "apps"}, "team": {"tier": "data"}}
EXTERNAL = "192.0.2.10"


def flows(*policies: dict[str, Any], pods: list[PodAddress] | None = None) -> AllowedFlows:
    return allowed_flows(list(policies), pods or PODS, NAMESPACES)


def to_web(
    from_pod: PodAddress | str, port: int = 8080, protocol: str = "TCP"
) -> tuple[str, str, str, int]:
    source = from_pod.ip if isinstance(from_pod, PodAddress) else from_pod
    return (source, WEB.ip, protocol, port)


def test_without_policies_everything_is_allowed() -> None:
    result = flows()
    assert result.allows(CLIENT.ip, WEB.ip, "TCP", 1) and result.allows(WEB.ip, EXTERNAL, "UDP", 53)
    assert not result.ingress_isolated and not result.egress_isolated


def test_an_empty_pod_selector_selects_every_pod_of_its_namespace_only() -> None:
    result = flows(policy("deny", {"podSelector": {}}))
    assert result.ingress_isolated == {WEB.ip, API.ip, CLIENT.ip}
    assert not result.allows(*to_web(CLIENT))
    assert result.allows(CLIENT.ip, OTHER_WEB.ip, "TCP", 8080)


def test_policy_types_default_to_ingress_plus_egress_when_there_are_egress_rules() -> None:
    only_ingress = flows(policy("p", {"podSelector": {"matchLabels": {"app": "web"}}}))
    assert only_ingress.ingress_isolated == {WEB.ip} and not only_ingress.egress_isolated
    # An empty egress list is no egress rule: the API server's default leaves Egress out.
    empty_egress = flows(
        policy("p", {"podSelector": {"matchLabels": {"app": "web"}}, "egress": []})
    )
    assert not empty_egress.egress_isolated
    with_egress = flows(
        policy(
            "p",
            {"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{"ports": [{"port": 53}]}]},
        )
    )
    assert with_egress.ingress_isolated == {WEB.ip} and with_egress.egress_isolated == {WEB.ip}
    assert with_egress.allows(WEB.ip, EXTERNAL, "TCP", 53)
    assert not with_egress.allows(WEB.ip, EXTERNAL, "TCP", 80)


def test_explicit_policy_types_isolate_only_what_they_name() -> None:
    egress_only = flows(policy("p", {"podSelector": {}, "policyTypes": ["Egress"]}))
    assert egress_only.egress_isolated == {WEB.ip, API.ip, CLIENT.ip}
    assert not egress_only.ingress_isolated
    assert not egress_only.allows(CLIENT.ip, WEB.ip, "TCP", 8080)
    assert egress_only.allows(OTHER_CLIENT.ip, WEB.ip, "TCP", 8080)
    # Rules of a type policyTypes leaves out have no effect, as in Kubernetes.
    ingress_listed = flows(
        policy(
            "p",
            {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [{}],
                "egress": [{"ports": [{"port": 1}]}],
            },
        )
    )
    assert not ingress_listed.egress_isolated
    assert ingress_listed.allows(WEB.ip, EXTERNAL, "TCP", 443)


def test_allowances_of_several_policies_add_up() -> None:
    web = {"matchLabels": {"app": "web"}}
    result = flows(
        policy(
            "a",
            {
                "podSelector": web,
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
            },
        ),
        policy(
            "b",
            {
                "podSelector": web,
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}],
            },
        ),
    )
    assert result.allows(*to_web(CLIENT)) and result.allows(*to_web(API))
    assert not result.allows(*to_web(OTHER_CLIENT))


def test_a_rule_without_peers_allows_any_address_and_without_ports_any_port() -> None:
    result = flows(policy("p", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}))
    for source in (CLIENT.ip, OTHER_CLIENT.ip, EXTERNAL):
        assert result.allows(source, WEB.ip, "TCP", 1)
        assert result.allows(source, WEB.ip, "SCTP", 65535)
        assert result.allows(source, WEB.ip, "ICMP", None)
    ports_only = flows(
        policy(
            "p",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"ports": [{"port": 8080}]}],
            },
        )
    )
    assert ports_only.allows(*to_web(EXTERNAL)) and not ports_only.allows(*to_web(EXTERNAL, 8081))
    assert not ports_only.allows(EXTERNAL, WEB.ip, "ICMP", None)


def test_a_pod_selector_alone_means_the_policy_namespace() -> None:
    result = flows(
        policy(
            "p",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
            },
        )
    )
    assert result.allows(*to_web(CLIENT))
    assert not result.allows(*to_web(OTHER_CLIENT))
    assert not result.allows(*to_web(EXTERNAL))


def test_a_namespace_selector_alone_means_every_pod_of_those_namespaces() -> None:
    result = flows(
        policy(
            "p",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"tier": "data"}}}]}],
            },
        )
    )
    assert result.allows(*to_web(TEAM_CLIENT)) and result.allows(*to_web(TEAM_DB))
    assert not result.allows(*to_web(CLIENT)) and not result.allows(*to_web(OTHER_CLIENT))
    by_name = flows(
        policy(
            "p",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "other"}
                                }
                            }
                        ]
                    }
                ],
            },
        )
    )
    assert by_name.allows(*to_web(OTHER_CLIENT)) and not by_name.allows(*to_web(TEAM_CLIENT))
    every_namespace = flows(
        policy(
            "p",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"namespaceSelector": {}}]}],
            },
        )
    )
    for source in (CLIENT, OTHER_CLIENT, TEAM_DB):
        assert every_namespace.allows(*to_web(source))
    assert not every_namespace.allows(*to_web(EXTERNAL))


def test_both_selectors_in_one_peer_must_match_and_two_peers_either() -> None:
    data = {"matchLabels": {"tier": "data"}}
    client = {"matchLabels": {"app": "client"}}
    web = {"matchLabels": {"app": "web"}}
    both = flows(
        policy(
            "p",
            {
                "podSelector": web,
                "ingress": [{"from": [{"namespaceSelector": data, "podSelector": client}]}],
            },
        )
    )
    assert both.allows(*to_web(TEAM_CLIENT))
    assert not both.allows(*to_web(TEAM_DB)) and not both.allows(*to_web(CLIENT))
    either = flows(
        policy(
            "p",
            {
                "podSelector": web,
                "ingress": [{"from": [{"namespaceSelector": data}, {"podSelector": client}]}],
            },
        )
    )
    assert either.allows(*to_web(TEAM_CLIENT)) and either.allows(*to_web(TEAM_DB))
    assert either.allows(*to_web(CLIENT)) and not either.allows(*to_web(OTHER_CLIENT))


def test_an_ip_block_allows_its_cidr_but_not_the_exceptions() -> None:
    result = flows(
        policy(
            "p",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "egress": [
                    {
                        "to": [
                            {
                                "ipBlock": {
                                    "cidr": "192.0.2.0/24",
                                    "except": ["192.0.2.128/25", "192.0.2.8/30"],
                                }
                            }
                        ]
                    }
                ],
            },
        )
    )
    assert result.allows(CLIENT.ip, "192.0.2.1", "TCP", 443)
    assert result.allows(CLIENT.ip, "192.0.2.127", "UDP", 53)
    for excepted in ("192.0.2.8", "192.0.2.11", "192.0.2.200", "198.51.100.1"):
        assert not result.allows(CLIENT.ip, excepted, "TCP", 443), excepted
    # ipBlocks match addresses, pods' included.
    pods_range = flows(
        policy(
            "p",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "egress": [{"to": [{"ipBlock": {"cidr": "10.1.0.2/32"}}]}],
            },
        )
    )
    assert pods_range.allows(CLIENT.ip, WEB.ip, "TCP", 8080) and not pods_range.allows(
        CLIENT.ip, API.ip, "TCP", 9000
    )


def test_an_ipv6_block_is_accepted_and_matches_no_ipv4_address() -> None:
    result = flows(
        policy(
            "p",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "egress": [{"to": [{"ipBlock": {"cidr": "::/0"}}]}],
            },
        )
    )
    assert result.egress_isolated == {CLIENT.ip}
    assert not result.allows(CLIENT.ip, EXTERNAL, "TCP", 443)


def test_named_ports_resolve_against_the_destination_pod() -> None:
    api_port_named_http = {
        "podSelector": {"matchLabels": {"app": "client"}},
        "egress": [{"ports": [{"port": "http"}]}],
    }
    egress = flows(policy("p", api_port_named_http))
    assert egress.allows(CLIENT.ip, WEB.ip, "TCP", 8080)
    assert egress.allows(CLIENT.ip, API.ip, "TCP", 9000)
    assert not egress.allows(CLIENT.ip, WEB.ip, "TCP", 9000)
    # No pod there: nothing names the port.
    assert not egress.allows(CLIENT.ip, EXTERNAL, "TCP", 8080)
    ingress = flows(
        policy(
            "p",
            {
                "podSelector": {
                    "matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]
                },
                "ingress": [{"ports": [{"port": "http"}]}],
            },
        )
    )
    assert ingress.allows(CLIENT.ip, WEB.ip, "TCP", 8080) and not ingress.allows(
        CLIENT.ip, WEB.ip, "TCP", 9000
    )
    assert ingress.allows(CLIENT.ip, API.ip, "TCP", 9000) and not ingress.allows(
        CLIENT.ip, API.ip, "TCP", 8080
    )


def test_a_named_port_the_destination_lacks_or_has_on_another_protocol_matches_nothing() -> None:
    web = {"matchLabels": {"app": "web"}}
    missing = flows(
        policy("p", {"podSelector": web, "ingress": [{"ports": [{"port": "metrics"}]}]})
    )
    assert missing.ingress_isolated == {WEB.ip}
    assert not any(missing.allows(CLIENT.ip, WEB.ip, "TCP", port) for port in (8080, 9090, 53))
    # The pod's `dns` port is UDP; a TCP rule naming it matches nothing, a UDP one the port.
    tcp = flows(policy("p", {"podSelector": web, "ingress": [{"ports": [{"port": "dns"}]}]}))
    assert not tcp.allows(CLIENT.ip, WEB.ip, "TCP", 53) and not tcp.allows(
        CLIENT.ip, WEB.ip, "UDP", 53
    )
    udp = flows(
        policy(
            "p", {"podSelector": web, "ingress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]}
        )
    )
    assert udp.allows(CLIENT.ip, WEB.ip, "UDP", 53)


def test_protocol_defaults_to_tcp_and_end_port_makes_a_range() -> None:
    web = {"matchLabels": {"app": "web"}}
    result = flows(
        policy(
            "p",
            {
                "podSelector": web,
                "ingress": [
                    {
                        "ports": [
                            {"port": 8000, "endPort": 8010},
                            {"protocol": "UDP", "port": 53},
                            {"protocol": "SCTP"},
                        ]
                    }
                ],
            },
        )
    )
    assert result.allows(*to_web(CLIENT, 8000)) and result.allows(*to_web(CLIENT, 8010))
    assert not result.allows(*to_web(CLIENT, 7999)) and not result.allows(*to_web(CLIENT, 8011))
    assert not result.allows(*to_web(CLIENT, 8005, "UDP"))
    assert result.allows(*to_web(CLIENT, 53, "UDP")) and not result.allows(
        *to_web(CLIENT, 53, "TCP")
    )
    assert result.allows(*to_web(CLIENT, 1, "SCTP")) and result.allows(
        *to_web(CLIENT, 65535, "SCTP")
    )


@pytest.mark.parametrize(
    ("expression", "selected"),
    [
        ({"key": "app", "operator": "In", "values": ["web", "api"]}, {"web", "api"}),
        ({"key": "app", "operator": "NotIn", "values": ["web"]}, {"api", "client", "unlabelled"}),
        ({"key": "role", "operator": "Exists"}, {"api"}),
        ({"key": "role", "operator": "DoesNotExist"}, {"web", "client", "unlabelled"}),
    ],
)
def test_match_expressions_select_as_kubernetes_does(
    expression: dict[str, Any], selected: set[str]
) -> None:
    pods = [
        pod("web", "10.1.0.2"),
        pod("api", "10.1.0.3", {"app": "api", "role": "backend"}),
        pod("client", "10.1.0.4"),
        pod("unlabelled", "10.1.0.5", {"other": "x"}),
    ]
    result = flows(policy("p", {"podSelector": {"matchExpressions": [expression]}}), pods=pods)
    assert {p.name for p in pods if p.ip in result.ingress_isolated} == selected


def test_match_labels_and_expressions_must_all_hold() -> None:
    pods = [
        pod("a", "10.1.0.2", {"app": "a", "tier": "web"}),
        pod("b", "10.1.0.3", {"app": "b", "tier": "web"}),
    ]
    selector = {
        "matchLabels": {"tier": "web"},
        "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["b"]}],
    }
    result = flows(policy("p", {"podSelector": selector}), pods=pods)
    assert result.ingress_isolated == {"10.1.0.2"}


@pytest.mark.parametrize(
    ("spec", "field", "problem"),
    [
        ({"podSelector": {}, "ingress": [{"fromm": []}]}, "spec.ingress[0].fromm", "not a field"),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
            "spec.ingress[0].ports[0].endPort",
            "numeric port",
        ),
        (
            {"podSelector": {}, "egress": [{"ports": [{"port": 90, "endPort": 80}]}]},
            "spec.egress[0].ports[0].endPort",
            "between",
        ),
        (
            {"podSelector": {}, "egress": [{"ports": [{"protocol": "ICMP"}]}]},
            "spec.egress[0].ports[0].protocol",
            "TCP, UDP, SCTP",
        ),
        (
            {"podSelector": {}, "egress": [{"ports": [{"port": 70000}]}]},
            "spec.egress[0].ports[0].port",
            "between 1 and 65535",
        ),
        (
            {"podSelector": {}, "egress": [{"ports": [{"port": "HTTP_PORT"}]}]},
            "spec.egress[0].ports[0].port",
            "port name",
        ),
        (
            {
                "podSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]
                }
            },
            "spec.podSelector.matchExpressions[0].operator",
            "not one of",
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            "spec.podSelector.matchExpressions[0].values",
            "at least one value",
        ),
        (
            {
                "podSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]
                }
            },
            "spec.podSelector.matchExpressions[0].values",
            "takes no values",
        ),
        (
            {
                "podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}],
            },
            "spec.ingress[0].from[0]",
            "cannot be combined",
        ),
        (
            {"podSelector": {}, "ingress": [{"from": [{}]}]},
            "spec.ingress[0].from[0]",
            "needs podSelector",
        ),
        (
            {
                "podSelector": {},
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}
                ],
            },
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "strict subset",
        ),
        (
            {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "ten"}}]}]},
            "spec.ingress[0].from[0].ipBlock.cidr",
            "not a CIDR",
        ),
        (
            {"podSelector": {}, "policyTypes": ["Ingres"]},
            "spec.policyTypes[0]",
            "not Ingress or Egress",
        ),
        ({"ingress": [{}]}, "spec.podSelector", "missing"),
        ({"podSelector": {}, "ingress": {"from": []}}, "spec.ingress", "must be a list"),
    ],
)
def test_unsupported_or_malformed_fields_are_refused_by_name(
    spec: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(UnsupportedManifest) as raised:
        flows(policy("broken", spec))
    assert raised.value.resource == "NetworkPolicy/demo/broken"
    assert raised.value.field == field
    assert problem in raised.value.problem


def test_a_policy_without_namespace_or_of_another_kind_is_refused() -> None:
    without_namespace = policy("p", {"podSelector": {}})
    del without_namespace["metadata"]["namespace"]
    with pytest.raises(UnsupportedManifest, match=r"metadata\.namespace"):
        flows(without_namespace)
    old = policy("p", {"podSelector": {}}) | {"apiVersion": "extensions/v1beta1"}
    with pytest.raises(UnsupportedManifest, match="apiVersion"):
        flows(old)


def test_pods_sharing_an_address_are_refused() -> None:
    with pytest.raises(LocalRunError, match=r"share the address 10\.1\.0\.2"):
        flows(pods=[WEB, pod("twin", WEB.ip)])


# -- the ruleset, checked by nft ----------------------------------------------------------------


def test_overlapping_allowances_become_disjoint_set_elements_nft_accepts() -> None:
    """Any address on 443, some pods on every port, a range of ports to a subnet: nftables
    refuses overlapping interval elements, so the ruleset must cut them apart."""
    _need_root_tools()
    client = {"matchLabels": {"app": "client"}}
    result = flows(
        policy(
            "p",
            {
                "podSelector": client,
                "egress": [
                    {"ports": [{"port": 443}, {"port": 8000, "endPort": 9000}]},
                    {"to": [{"podSelector": {}}], "ports": [{"port": 1, "endPort": 65535}]},
                    {
                        "to": [{"ipBlock": {"cidr": "10.1.0.0/29", "except": ["10.1.0.4/32"]}}],
                        "ports": [{"port": 8080}, {"port": 443}],
                    },
                    {"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]},
                    {"to": [{"ipBlock": {"cidr": "10.1.0.0/24"}}]},
                    {"ports": [{"port": "http"}]},
                ],
            },
        )
    )
    ruleset = network_policy.nftables_ruleset(
        "mlopsctl_overlap_check", result, PODS, "10.1.0.0/24", "10.1.1.0/24"
    )
    checked = subprocess.run(
        ["nft", "-c", "-f", "-"], input=ruleset, text=True, capture_output=True
    )
    assert checked.returncode == 0, checked.stderr


def test_disjoint_boxes_cover_exactly_the_union() -> None:
    generator = random.Random(7)
    for _ in range(200):
        boxes = []
        for _ in range(generator.randint(1, 6)):
            first, second = sorted(generator.randint(0, 40) for _ in range(2))
            low, high = sorted(generator.randint(0, 30) for _ in range(2))
            boxes.append(((first, second), (low, high)))
        cut = network_policy._disjoint_boxes(boxes)
        for address in range(0, 42):
            for port in range(0, 32):
                inside = [
                    box
                    for box in cut
                    if box[0][0] <= address <= box[0][1] and box[1][0] <= port <= box[1][1]
                ]
                wanted = any(a <= address <= b and c <= port <= d for (a, b), (c, d) in boxes)
                assert len(inside) == (1 if wanted else 0), (boxes, cut, address, port)


def test_the_ruleset_refuses_pods_outside_the_pod_range_and_overlapping_ranges() -> None:
    result = flows()
    with pytest.raises(LocalRunError, match="outside the pod range"):
        network_policy.nftables_ruleset("t", result, PODS, "10.2.0.0/24", "10.3.0.0/24")
    with pytest.raises(LocalRunError, match="overlaps"):
        network_policy.nftables_ruleset("t", result, PODS, "10.1.0.0/16", "10.1.128.0/24")
    with pytest.raises(LocalRunError, match="overlaps the Service range"):
        network_policy.nftables_ruleset(
            "t", result, PODS, "10.1.0.0/24", "10.3.0.0/24", service_cidr="10.3.0.0/16"
        )
    with pytest.raises(LocalRunError, match="other pods"):
        network_policy.nftables_ruleset("t", result, PODS[:2], "10.1.0.0/24", "10.3.0.0/24")
    with pytest.raises(LocalRunError, match="table name"):
        network_policy.nftables_ruleset("bad-name", result, PODS, "10.1.0.0/24", "10.3.0.0/24")


# -- what nft recorded --------------------------------------------------------------------------


NFT_LISTING = {
    "nftables": [
        {
            "metainfo": {
                "version": "1.0.6",
                "release_name": "Lester Gooch #5",
                "json_schema_version": 1,
            }
        },
        {
            "set": {
                "family": "inet",
                "name": "denied",
                "table": "mlopsctl_run",
                "type": ["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service"],
                "handle": 9,
                "size": 65536,
                "flags": ["timeout"],
                "timeout": 3600,
                "elem": [
                    {
                        "elem": {
                            "val": {"concat": ["10.1.0.4", "10.1.0.2", "tcp", 9090]},
                            "expires": 3591,
                        }
                    },
                    {
                        "elem": {
                            "val": {"concat": ["10.1.0.4", "10.1.0.3", "icmp", 0]},
                            "expires": 3000,
                        }
                    },
                    {"concat": ["10.1.0.4", "10.1.0.3", 253, 0]},
                ],
            }
        },
    ]
}


def test_denials_are_read_from_nft_json() -> None:
    assert network_policy.parse_denials(json.dumps(NFT_LISTING)) == [
        Denial("10.1.0.4", "10.1.0.2", "TCP", 9090, "policy", 3591),
        Denial("10.1.0.4", "10.1.0.3", "ICMP", None, "policy", 3000),
        Denial("10.1.0.4", "10.1.0.3", "253", None, "policy", None),
    ]
    assert network_policy.parse_denials("{}") == []
    with pytest.raises(LocalRunError, match="does not parse"):
        network_policy.parse_denials("Error: No such file or directory")


# -- enforcement between real network namespaces ---------------------------------------------------

# Addresses of this test only: outside 10.200-10.239, which the run's network claims. A
# blackhole route for the whole block keeps anything in it from leaving by the default route.
TEST_BLOCK = "10.247.0.0/16"
POD_RANGE = "10.247.0.0/25"
RUN_HOSTS_RANGE = "10.247.0.128/26"
SERVICE_RANGE = "10.247.2.0/24"
CLIENT_IP, SERVER_IP, RUN_HOST_IP = "10.247.0.2", "10.247.0.3", "10.247.0.130"
# On the host's loopback, outside the run's ranges: pods reach them through INPUT. The node
# address is the host as pods see it; the other stands for the machine's real addresses.
NODE_IP, OTHER_HOST_IP = "10.247.0.193", "10.247.0.194"
HOST_ADDRESSES = (NODE_IP, OTHER_HOST_IP)
OUTSIDE_IP = "10.247.1.1"  # outside the run's ranges, in a namespace of the test
UNSERVED_VIP = "10.247.2.1"  # a Service address nothing DNATs
GATEWAY = "169.254.1.1"
SERVER_LIFETIME_SECONDS = 120

ECHO_SERVER = """
import os, socket, sys, threading
threading.Timer(float(sys.argv[1]), lambda: os._exit(0)).start()
def echo(connection):
    with connection:
        while data := connection.recv(4096):
            connection.sendall(data)
def serve(listener):
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=echo, args=(connection,), daemon=True).start()
for port in sys.argv[3:]:
    listener = socket.create_server((sys.argv[2], int(port)))
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
print("ready", flush=True)
"""

ONE_CONNECTION = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1) as connection:
        connection.sendall(b"ping\\n")
        assert connection.recv(16) == b"ping\\n"
except OSError as error:
    print(type(error).__name__, error)
    sys.exit(1)
"""

LASTING_CONNECTION = """
import socket, sys
connection = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
print("connected", flush=True)
for line in sys.stdin:
    connection.sendall(line.encode())
    print(connection.recv(4096).decode().strip(), flush=True)
"""


def _need_root_tools() -> None:
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"):
        pytest.skip("needs root with nft and ip (network namespaces, nftables)")


def _run(*command: str) -> None:
    completed = subprocess.run(command, capture_output=True, text=True)
    assert completed.returncode == 0, f"{' '.join(command)}: {completed.stderr}"


@dataclass
class NamespaceNetwork:
    """Namespaces with routed veths, as the run makes them, and everything to remove again."""

    tag: str
    table: str
    namespaces: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    host_addresses: list[str] = field(default_factory=list)
    blackhole_added: bool = False
    forwarding_before: str | None = None

    def add_namespace(self, role: str, address: str) -> None:
        namespace = f"np-test-{self.tag}-{role}"
        host_side, inside = f"npt{self.tag}{role}", f"npt{self.tag}{role}x"
        _run("ip", "netns", "add", namespace)
        self.namespaces[role] = namespace
        _run("ip", "link", "add", host_side, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", namespace)
        _run("ip", "-n", namespace, "link", "set", inside, "name", "eth0")
        _run("ip", "-n", namespace, "address", "add", f"{address}/32", "dev", "eth0")
        _run("ip", "-n", namespace, "link", "set", "lo", "up")
        _run("ip", "-n", namespace, "link", "set", "eth0", "up")
        # The host is the namespace's only way out, answering ARP for the gateway by proxy.
        _run("ip", "-n", namespace, "route", "add", GATEWAY, "dev", "eth0", "scope", "link")
        _run("ip", "-n", namespace, "route", "add", "default", "via", GATEWAY, "dev", "eth0")
        _run("ip", "link", "set", host_side, "up")
        _run("sysctl", "-q", "-w", f"net.ipv4.conf.{host_side}.proxy_arp=1")
        # Proxied ARP replies wait up to 0.8 s by default: longer than a connect timeout of 1 s
        # allows when both ends ask at once.
        _run("sysctl", "-q", "-w", f"net.ipv4.neigh.{host_side}.proxy_delay=0")
        _run("ip", "route", "add", f"{address}/32", "dev", host_side)

    def start_server(self, role: str | None, address: str, *ports: int) -> None:
        prefix = ["ip", "netns", "exec", self.namespaces[role]] if role else []
        command = [
            *prefix,
            sys.executable,
            "-c",
            ECHO_SERVER,
            str(SERVER_LIFETIME_SECONDS),
            address,
        ]
        process = subprocess.Popen([*command, *map(str, ports)], stdout=subprocess.PIPE, text=True)
        self.processes.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"

    def connects(self, role: str, address: str, port: int) -> bool:
        return not self.failure(role, address, port)

    def failure(self, role: str, address: str, port: int) -> str:
        """Why a connection from inside the namespace failed; empty when it worked."""
        completed = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.namespaces[role],
                sys.executable,
                "-c",
                ONE_CONNECTION,
                address,
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return "" if completed.returncode == 0 else completed.stdout.strip() or "failed"

    def lasting_connection(self, role: str, address: str, port: int) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.namespaces[role],
                sys.executable,
                "-c",
                LASTING_CONNECTION,
                address,
                str(port),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "connected"
        return process

    def apply(self, ruleset: str) -> None:
        completed = subprocess.run(
            ["nft", "-f", "-"], input=ruleset, text=True, capture_output=True
        )
        assert completed.returncode == 0, completed.stderr

    def denials(self) -> list[Denial]:
        records: list[Denial] = []
        for name in (network_policy.DENIED_SET, network_policy.OUTSIDE_SET):
            listed = subprocess.run(
                ["nft", "-j", "list", "set", "inet", self.table, name],
                capture_output=True,
                text=True,
            )
            assert listed.returncode == 0, listed.stderr
            records.extend(network_policy.parse_denials(listed.stdout))
        return records

    def remove(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)
        for role, namespace in self.namespaces.items():
            # Deleting the namespace removes its veth end, the host end and the host route.
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
            subprocess.run(["ip", "link", "delete", f"npt{self.tag}{role}"], capture_output=True)
        for address in self.host_addresses:
            subprocess.run(
                ["ip", "address", "delete", f"{address}/32", "dev", "lo"], capture_output=True
            )
        if self.blackhole_added:
            subprocess.run(["ip", "route", "delete", "blackhole", TEST_BLOCK], capture_output=True)
        if self.forwarding_before == "0":
            subprocess.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"], capture_output=True)


@pytest.fixture
def network() -> Iterator[NamespaceNetwork]:
    _need_root_tools()
    for address in (
        TEST_BLOCK,
        *(f"{a}/32" for a in (CLIENT_IP, SERVER_IP, RUN_HOST_IP, OUTSIDE_IP, *HOST_ADDRESSES)),
    ):
        routed = subprocess.run(
            ["ip", "route", "show", "table", "all", "exact", address],
            capture_output=True,
            text=True,
        ).stdout
        if routed.strip():
            pytest.fail(
                f"{address} is routed already ({routed.strip()}): is this test running twice?"
            )
    tag = f"{os.getpid() % 0xFFFF:x}"
    network = NamespaceNetwork(tag=tag, table=f"np_test_{tag}")
    try:
        _run("ip", "route", "add", "blackhole", TEST_BLOCK)
        network.blackhole_added = True
        network.forwarding_before = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        _run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        network.add_namespace("c", CLIENT_IP)
        network.add_namespace("s", SERVER_IP)
        network.add_namespace("h", RUN_HOST_IP)
        network.add_namespace("o", OUTSIDE_IP)
        for address in HOST_ADDRESSES:
            _run("ip", "address", "add", f"{address}/32", "dev", "lo")
            network.host_addresses.append(address)
        yield network
    finally:
        network.remove()


def _enforced_policies(server_ports: list[Any]) -> list[dict[str, Any]]:
    return [
        policy(
            "server",
            {
                "podSelector": {"matchLabels": {"app": "server"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                        "ports": server_ports,
                    }
                ],
            },
        ),
        policy(
            "client",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"podSelector": {"matchLabels": {"app": "server"}}}]},
                    {"to": [{"ipBlock": {"cidr": RUN_HOSTS_RANGE}}], "ports": [{"port": 443}]},
                ],
            },
        ),
    ]


def test_nftables_enforce_the_policies_between_network_namespaces(
    network: NamespaceNetwork,
) -> None:
    pods = [
        pod("client", CLIENT_IP, {"app": "client"}, ports=(ContainerPort("echo", 7000),)),
        pod(
            "server",
            SERVER_IP,
            {"app": "server"},
            ports=(ContainerPort("http", 8080), ContainerPort("admin", 9090)),
        ),
    ]
    network.start_server("c", "0.0.0.0", 7000)
    network.start_server("s", "0.0.0.0", 8080, 9090)
    network.start_server("h", "0.0.0.0", 80, 443)
    network.start_server("o", "0.0.0.0", 8080)
    for address in HOST_ADDRESSES:
        network.start_server(None, address, 2222)
    # Before any rule, every path works: what fails later, the rules stopped.
    assert network.connects("s", OUTSIDE_IP, 8080)
    assert network.connects("c", SERVER_IP, 9090)
    assert network.connects("c", NODE_IP, 2222)
    assert network.connects("s", OTHER_HOST_IP, 2222)

    def ruleset(server_ports: list[Any]) -> str:
        result = allowed_flows(_enforced_policies(server_ports), pods, {"demo": {}})
        return network_policy.nftables_ruleset(
            network.table,
            result,
            pods,
            POD_RANGE,
            RUN_HOSTS_RANGE,
            node_address=NODE_IP,
            service_cidr=SERVICE_RANGE,
        )

    network.apply(ruleset([{"port": "http"}]))
    started = time.monotonic()
    assert network.connects("c", SERVER_IP, 8080)  # the named port resolves on the server
    assert not network.connects("c", SERVER_IP, 9090)
    assert not network.connects("h", SERVER_IP, 8080)  # a run host is no client pod
    assert network.connects("c", RUN_HOST_IP, 443)
    assert not network.connects("c", RUN_HOST_IP, 80)
    assert not network.connects("c", NODE_IP, 2222)  # the host too, through INPUT
    assert network.connects("s", CLIENT_IP, 7000)  # the client's ingress is not isolated
    assert network.connects("s", RUN_HOST_IP, 80)  # nor the server's egress
    assert network.connects("s", NODE_IP, 2222)
    assert not network.connects("s", OUTSIDE_IP, 8080)  # leaving the run, though, never
    assert not network.connects("c", OUTSIDE_IP, 8080)
    assert not network.connects("s", OTHER_HOST_IP, 2222)  # nor the host's other addresses
    # A VIP with no endpoint refuses at once (a reset), and is no denial.
    assert "ConnectionRefusedError" in network.failure("s", UNSERVED_VIP, 80)
    denied_connects = 7
    assert time.monotonic() - started < denied_connects * 1.5 + 10, "denied connections hang"

    lasting = network.lasting_connection("c", SERVER_IP, 8080)
    assert lasting.stdin is not None and lasting.stdout is not None
    lasting.stdin.write("before\n")
    lasting.stdin.flush()
    assert lasting.stdout.readline().strip() == "before"

    # New rules: only the admin port. New connections to 8080 stop, the open one carries on.
    network.apply(ruleset([{"port": 9090}]))
    assert not network.connects("c", SERVER_IP, 8080)
    assert network.connects("c", SERVER_IP, 9090)
    lasting.stdin.write("after\n")
    lasting.stdin.flush()
    assert lasting.stdout.readline().strip() == "after"

    recorded = {(d.source, d.destination, d.protocol, d.port, d.reason) for d in network.denials()}
    assert recorded == {
        (CLIENT_IP, SERVER_IP, "TCP", 9090, "policy"),  # kept across the second load
        (RUN_HOST_IP, SERVER_IP, "TCP", 8080, "policy"),
        (CLIENT_IP, RUN_HOST_IP, "TCP", 80, "policy"),
        (CLIENT_IP, NODE_IP, "TCP", 2222, "policy"),
        (CLIENT_IP, SERVER_IP, "TCP", 8080, "policy"),
        (SERVER_IP, OUTSIDE_IP, "TCP", 8080, "outside"),
        (CLIENT_IP, OUTSIDE_IP, "TCP", 8080, "outside"),
        (SERVER_IP, OTHER_HOST_IP, "TCP", 2222, "outside"),
    }
    lines = {network_policy.describe_denial(denial, pods) for denial in network.denials()}
    assert f"server (demo) -> {OUTSIDE_IP} TCP 8080: leaves the run" in lines
    assert "client (demo) -> server (demo) TCP 9090: denied by NetworkPolicy" in lines

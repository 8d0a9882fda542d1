"""mlopsctl.promote.live_cluster: what one environment's cluster says about each component,
read from the API server's lists (a fake `kube` here), once per kind."""

from __future__ import annotations

from typing import Any, cast

from mlopsctl.base.errors import KubeApiError
from mlopsctl.base.kubeapi import KubeApi
from mlopsctl.promote.live_cluster import EnvironmentReader, _pinned_versions, _served
from mlopsctl.promote.live_status import ClusterView

APPLICATIONS = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications"
DEPLOYMENTS = "/apis/apps/v1/namespaces/serving/deployments"
CONFIG_MAPS = "/api/v1/namespaces/serving/configmaps"


def a_template(
    *containers: dict[str, Any], init: tuple[dict[str, Any], ...] = ()
) -> dict[str, Any]:
    return {"template": {"spec": {"containers": list(containers), "initContainers": list(init)}}}


def test_pinned_versions_reads_values_config_map_keys_and_env_from() -> None:
    config_maps = {
        "pins": {"data": {"WINE": "models:/wine/7", "OTHER": "plain"}},
        "more": {"data": {"DIGITS": "models:/digits/2"}},
    }
    spec = a_template(
        {
            "env": [
                {"name": "IRIS", "value": "models:/iris/3"},
                {
                    "name": "WINE",
                    "valueFrom": {"configMapKeyRef": {"name": "pins", "key": "WINE"}},
                },
                {"name": "PORT", "value": "8080"},
            ],
            "envFrom": [{"configMapRef": {"name": "more"}}],
        },
        init=({"env": [{"name": "PRELOAD", "value": "models:/team/fraud/11"}]},),
    )

    assert _pinned_versions(spec, config_maps) == {
        "team/fraud": "11",
        "iris": "3",
        "wine": "7",
        "digits": "2",
    }


def test_pinned_versions_skips_aliases_missing_config_maps_and_half_uris() -> None:
    spec = a_template(
        {
            "env": [
                {"name": "A", "value": "models:/iris@production"},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "B"}}},
                {"name": "C", "value": "models:/iris"},
                {"name": "D", "value": "models:/iris/"},
            ],
            "envFrom": [{"configMapRef": {"name": "gone"}}],
        }
    )
    assert _pinned_versions(spec, {"gone-not": {"data": None}}) == {}
    assert _pinned_versions({}, {}) == {}


def test_served_reads_the_rollout_from_spec_and_status() -> None:
    deployment = {
        "metadata": {"generation": 4},
        "spec": {"replicas": 3, **a_template({"env": [{"name": "M", "value": "models:/iris/3"}]})},
        "status": {
            "observedGeneration": 3,
            "replicas": 4,
            "readyReplicas": 2,
            "updatedReplicas": 1,
            "availableReplicas": 2,
        },
    }
    served = _served(deployment, {})

    assert served.versions == {"iris": "3"}
    assert (served.replicas, served.ready_replicas, served.updated_replicas) == (3, 2, 1)
    assert (served.current_replicas, served.available_replicas) == (4, 2)
    assert served.observed is False


def test_served_of_a_bare_deployment_wants_one_replica_and_has_none() -> None:
    served = _served({}, {})
    assert (served.replicas, served.ready_replicas, served.observed) == (1, 0, True)
    assert not served.rolled_out


class FakeKube:
    """Answers each path from `answers` (404 otherwise) and records every request."""

    def __init__(self, answers: dict[str, tuple[int, dict[str, Any]]]) -> None:
        self.answers = answers
        self.requests: list[str] = []
        self.unreachable = False

    def request(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        assert method == "GET"
        self.requests.append(path)
        if self.unreachable:
            raise KubeApiError("cluster at https://k8s.test did not answer")
        return self.answers.get(path, (404, {}))


def a_list(*items: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {"items": list(items)}


def an_application(name: str, namespace: str | None = "serving") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"destination": {"namespace": namespace} if namespace else {}},
        "status": {
            "sync": {"status": "Synced", "revision": "abc"},
            "health": {"status": "Healthy"},
        },
    }


def a_deployment(name: str, config_map: str) -> dict[str, Any]:
    env = [{"name": "M", "valueFrom": {"configMapKeyRef": {"name": config_map, "key": "M"}}}]
    return {
        "metadata": {"name": name, "generation": 1},
        "spec": {"replicas": 1, **a_template({"env": env})},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "readyReplicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": 1,
        },
    }


def a_reader(kube: FakeKube, environment: str = "prod") -> EnvironmentReader:
    return EnvironmentReader(cast(KubeApi, kube), environment)


def a_cluster() -> FakeKube:
    return FakeKube(
        {
            APPLICATIONS: a_list(
                an_application("model-server-prod"),
                an_application("streamlit-prod"),
                an_application("model-server-staging", "staging"),
            ),
            DEPLOYMENTS: a_list(
                a_deployment("model-server", "pins"), a_deployment("streamlit", "front")
            ),
            CONFIG_MAPS: a_list(
                {"metadata": {"name": "pins"}, "data": {"M": "models:/iris/3"}},
                {"metadata": {"name": "front"}, "data": {"M": "models:/iris/2"}},
            ),
        }
    )


def test_a_component_view_has_its_application_and_what_its_pods_serve() -> None:
    view = a_reader(a_cluster()).view("model-server")

    assert view.error == ""
    assert view.application is not None
    assert (view.application.name, view.application.sync_status) == ("model-server-prod", "Synced")
    assert view.served is not None
    assert view.served.versions == {"iris": "3"}
    assert view.served.rolled_out


def test_each_kind_is_listed_once_and_each_component_viewed_once() -> None:
    kube = a_cluster()
    reader = a_reader(kube)

    first = reader.view("model-server")
    again = reader.view("model-server")
    other = reader.view("streamlit")

    assert again is first
    assert other.served is not None and other.served.versions == {"iris": "2"}
    assert kube.requests == [APPLICATIONS, DEPLOYMENTS, CONFIG_MAPS]


def test_a_missing_application_or_deployment_gives_what_was_found() -> None:
    kube = a_cluster()
    kube.answers[APPLICATIONS] = a_list(
        an_application("lonely-prod"), an_application("spread-prod", None)
    )
    reader = a_reader(kube)

    assert reader.view("no-such-component") == ClusterView()
    lonely = reader.view("lonely")  # no Deployment named lonely in its namespace
    spread = reader.view("spread")  # no destination namespace to look in
    assert lonely.application is not None and lonely.served is None
    assert spread.application is not None and spread.served is None
    assert kube.requests == [APPLICATIONS, DEPLOYMENTS]


def test_no_argo_cd_installed_is_no_application_not_an_error() -> None:
    view = a_reader(FakeKube({})).view("model-server")
    assert (view.error, view.refused, view.application, view.served) == ("", False, None, None)


def test_a_forbidden_list_gives_a_refused_view_and_later_views_ask_again() -> None:
    kube = a_cluster()
    kube.answers[APPLICATIONS] = (403, {"message": "applications is forbidden"})
    reader = a_reader(kube)

    view = reader.view("model-server")

    assert view.refused
    assert view.error == "listing the Applications: HTTP 403 applications is forbidden"
    assert view.application is None
    kube.answers[APPLICATIONS] = a_cluster().answers[APPLICATIONS]
    assert reader.view("model-server").application is not None


def test_an_unreachable_cluster_is_asked_once_for_the_environment() -> None:
    kube = a_cluster()
    kube.unreachable = True
    reader = a_reader(kube)

    first = reader.view("model-server")
    second = reader.view("streamlit")

    assert first.error == second.error == "cluster at https://k8s.test did not answer"
    assert not first.refused
    assert kube.requests == [APPLICATIONS]

"""mlopsctl.base.argocd: an Application's sources, a repository URL in one spelling, and the
environment a root belongs to."""

from __future__ import annotations

from typing import Any

import pytest

from mlopsctl.base.argocd import application_sources, environment_of, normalise_repository_url
from mlopsctl.base.resources import Resource


def an_application(spec: Any) -> Resource:
    body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "spec": spec}
    return Resource("clusters/prod", body)


def test_a_single_source_is_named_spec_source() -> None:
    source = {"repoURL": "https://github.com/example/platform", "path": "apps/prod"}
    assert application_sources(an_application({"source": source})) == [("spec.source", source)]


def test_multiple_sources_are_named_by_index_skipping_non_mappings() -> None:
    first = {"repoURL": "https://charts.example.com", "chart": "web"}
    third = {"repoURL": "https://github.com/example/platform", "ref": "values"}
    application = an_application({"sources": [first, "not a source", third]})

    assert application_sources(application) == [
        ("spec.sources[0]", first),
        ("spec.sources[2]", third),
    ]


def test_source_wins_over_sources_when_both_are_set() -> None:
    source = {"path": "apps/prod"}
    application = an_application({"source": source, "sources": [{"path": "other"}]})
    assert application_sources(application) == [("spec.source", source)]


@pytest.mark.parametrize("spec", [None, {}, {"source": "apps/prod"}, {"sources": None}])
def test_an_application_without_sources_has_none(spec: Any) -> None:
    assert application_sources(an_application(spec)) == []


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/Example/Platform",
        "https://github.com/example/platform.git",
        "  https://github.com/example/platform/  ",
        "HTTPS://GITHUB.COM/EXAMPLE/PLATFORM",
        "HTTPS://GITHUB.COM/EXAMPLE/PLATFORM.GIT",
    ],
)
def test_spellings_of_one_repository_normalise_alike(url: str) -> None:
    assert normalise_repository_url(url) == "https://github.com/example/platform"


def test_other_repositories_stay_different() -> None:
    assert normalise_repository_url("https://github.com/example/platform-charts") != (
        normalise_repository_url("https://github.com/example/platform")
    )


@pytest.mark.parametrize(
    ("root", "environment"),
    [
        ("apps/prod", "prod"),
        ("clusters/staging/argocd", "staging"),
        ("clusters/dev", "dev"),
        ("apps", None),
        ("base/model-server", None),
        ("overlays/prod/model-server", None),
    ],
)
def test_environment_of_a_root(root: str, environment: str | None) -> None:
    assert environment_of(root) == environment

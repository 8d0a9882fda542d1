"""Errors of the local run: what it cannot honour, named by resource and field."""

from __future__ import annotations

from mlopsctl.errors import MlopsctlError


class LocalRunError(MlopsctlError):
    """The local run cannot start or go on; the message says what and where."""


class UnsupportedManifest(LocalRunError):
    """A manifest asks for something the local run cannot honour.

    Never skipped silently: a field the run ignored could be the one that breaks the cluster.
    """

    def __init__(self, resource: object, field: str, problem: str) -> None:
        self.resource = str(resource)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.resource}: {field}: {problem}")

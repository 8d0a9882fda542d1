"""The promoter service (`mlopsctl serve`): the sync loop run on webhooks and a timer.

It composes the pipelines below it: each pass promotes (`promote`), validates every edit before
committing it (`validate`, handed to promotion as its validator) and records what runs in each
cluster. `reconciler` is the loop and the service, `http` its HTTP surface, `webhooks` the
MLflow deliveries that wake it; this package's names are the service's public surface.
"""

from mlopsctl.service.reconciler import (
    Metrics,
    Reconciler,
    Service,
    Settings,
    branch_config,
    pass_allowance_seconds,
    ready,
)

__all__ = [
    "Metrics",
    "Reconciler",
    "Service",
    "Settings",
    "branch_config",
    "pass_allowance_seconds",
    "ready",
]

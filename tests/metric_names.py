"""Every sample name a worker exposes: what alert rules and dashboards may use.

Test-only (the deploy and ops tests check ``deploy/`` against it), so it lives
here rather than in ``worker.ops.metrics``.
"""

from __future__ import annotations

from worker.ops.metrics import Metrics


def metric_names(metrics: Metrics | None = None) -> set[str]:
    """Names a scrape of a fresh :class:`Metrics` shows, suffixes included."""
    registry = (metrics or Metrics()).registry
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        for sample in family.samples:
            names.add(sample.name)
    return names

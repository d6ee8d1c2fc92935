"""A one-screen summary of a validated catalog (``events-worker catalog check``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from worker.domain.catalog import CatalogDocument


def summarize_catalog(path: str, documents: Sequence[CatalogDocument]) -> list[str]:
    """Lines for humans: one per tenant/environment, then the totals.

    Line items are counted by the billing model of their price, so a reader
    sees at a glance what the worker will bill with.
    """
    lines = [f"catalog {path} is valid: {len(documents)} tenant/environment documents"]
    totals: Counter[str] = Counter()
    for document in documents:
        prices = {price.id: price.billing_model.value for price in document.prices}
        models = Counter(
            prices[item.price_id]
            for subscription in document.subscriptions
            for item in subscription.line_items
        )
        counts = {
            "customers": len(document.customers),
            "subscriptions": len(document.subscriptions),
            "line items": sum(models.values()),
            "meters": len(document.meters),
            "prices": len(document.prices),
            "features": len(document.features),
        }
        totals.update(counts)
        by_model = ", ".join(f"{model} {count}" for model, count in sorted(models.items()))
        listed = ", ".join(f"{count} {name}" for name, count in counts.items())
        scope = f"{document.tenant_id}/{document.environment_id}"
        lines.append(f"  {scope}: {listed}" + (f" (by price model: {by_model})" if models else ""))
    if len(documents) > 1:
        lines.append("  total: " + ", ".join(f"{totals[name]} {name}" for name in totals))
    return lines

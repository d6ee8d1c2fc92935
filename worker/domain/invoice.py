"""Per-(line item, period) totals from priced rows: what an invoice line shows.

Because rows telescope (DESIGN.md §4), the period quantity is
``sum(qty_free_applied) + sum(qty_billable)`` and the unrounded amount is
``sum(cost)``, for every aggregation type; the store sums them
(:func:`worker.store.processed.line_item_totals`). ``amount`` is rounded to the
currency's precision, half away from zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from worker.domain.money import format_decimal, quantize, round_invoice_amount


@dataclass(frozen=True, slots=True)
class LineItemTotal:
    """One invoice line: a subscription line item in one billing period."""

    customer_id: str
    subscription_id: str
    sub_line_item_id: str
    period_id: int
    price_id: str
    feature_id: str
    currency: str
    qty_total: Decimal
    qty_free_applied: Decimal
    qty_billable: Decimal
    cost: Decimal
    event_count: int

    @property
    def amount(self) -> Decimal:
        """Invoice amount: ``cost`` rounded to the currency's precision."""
        return round_invoice_amount(self.cost, self.currency)

    def to_json(self) -> dict[str, object]:
        """The ``query line-items --json`` object.

        Decimals are strings with exactly 15 places (``amount``: the currency's
        places), so equal values always print the same.
        """
        return {
            "subscription_id": self.subscription_id,
            "sub_line_item_id": self.sub_line_item_id,
            "period_id": self.period_id,
            "customer_id": self.customer_id,
            "price_id": self.price_id,
            "feature_id": self.feature_id,
            "currency": self.currency,
            "qty_total": format_decimal(quantize(self.qty_total)),
            "qty_free_applied": format_decimal(quantize(self.qty_free_applied)),
            "qty_billable": format_decimal(quantize(self.qty_billable)),
            "cost": format_decimal(quantize(self.cost)),
            "amount": format_decimal(self.amount),
            "event_count": self.event_count,
        }

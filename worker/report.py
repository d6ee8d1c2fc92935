"""Plain-text invoice tables for the demo and operators."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from worker.domain.catalog_index import CatalogIndex
from worker.domain.invoice import LineItemTotal
from worker.domain.money import round_invoice_amount

_COLUMNS = ("feature", "period", "usage", "free", "billable", "cost", "amount")


def render_invoices(
    totals: Iterable[LineItemTotal], index: CatalogIndex | None = None, tenant: str = ""
) -> str:
    """One table per customer: a line per (line item, period), totals per currency."""
    by_customer: dict[str, list[LineItemTotal]] = defaultdict(list)
    for total in totals:
        by_customer[total.customer_id].append(total)
    blocks = []
    for customer_id in sorted(by_customer, key=_natural):
        lines = by_customer[customer_id]
        rows = [
            (
                _feature_name(index, tenant, line),
                datetime.fromtimestamp(line.period_id / 1000, UTC).strftime("%Y-%m-%d"),
                _num(line.qty_total),
                _num(line.qty_free_applied),
                _num(line.qty_billable),
                _num(line.cost),
                f"{line.amount} {line.currency.upper()}",
            )
            for line in lines
        ]
        sums: dict[str, Decimal] = defaultdict(Decimal)
        for line in lines:
            sums[line.currency] += line.cost
        total_text = ", ".join(
            f"{round_invoice_amount(cost, currency)} {currency.upper()}"
            for currency, cost in sorted(sums.items())
        )
        blocks.append(f"customer {customer_id}\n{_table(rows)}\n  total due: {total_text}")
    return "\n\n".join(blocks)


def _feature_name(index: CatalogIndex | None, tenant: str, line: LineItemTotal) -> str:
    if index is not None:
        for (feature_tenant, _, feature_id), info in index.features.items():
            if feature_id == line.feature_id and feature_tenant == tenant and info.name:
                return info.name
    return line.feature_id or line.sub_line_item_id


def _num(value: Decimal) -> str:
    """Up to 6 decimals for display; stored values keep 15."""
    text = f"{value.quantize(Decimal('0.000001')):f}".rstrip("0").rstrip(".")
    return text or "0"


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(_COLUMNS, *rows, strict=False)]
    header = "  " + "  ".join(
        name.ljust(width) if i < 2 else name.rjust(width)
        for i, (name, width) in enumerate(zip(_COLUMNS, widths, strict=True))
    )
    body = [
        "  "
        + "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    rule = "  " + "-" * (len(header) - 2)
    return "\n".join([header, rule, *body])


def _natural(text: str) -> tuple[str, int]:
    head, _, tail = text.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (text, 0)

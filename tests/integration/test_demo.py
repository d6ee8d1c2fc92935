"""`events-worker demo` on a fresh directory: exits 0 and prints invoices that
match what `query line-items` reads back from the store it created."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

CLI = [sys.executable, "-m", "worker.cli"]
ZERO_DECIMAL = {"jpy", "krw", "vnd", "clp"}


def test_demo_prints_the_invoices_the_store_holds(tmp_path: Path) -> None:
    demo = subprocess.run([*CLI, "demo"], cwd=tmp_path, capture_output=True, timeout=600)
    assert demo.returncode == 0, demo.stderr.decode()[-2000:]
    output = demo.stdout.decode()
    assert "dead letters" in output and "total due" in output

    printed: dict[tuple[str, str], str] = {}
    tenant = ""
    customer = ""
    for line in output.splitlines():
        if line.startswith("== tenant "):
            tenant = line.split()[2]
        elif line.startswith("customer "):
            customer = line.split()[1]
        elif line.strip().startswith("total due:"):
            printed[(tenant, customer)] = line.split(":", 1)[1].strip()

    expected: dict[tuple[str, str], str] = {}
    for tenant_id in sorted({tenant for tenant, _ in printed}):
        query = subprocess.run(
            [*CLI, "query", "line-items", "--tenant", tenant_id, "--environment", "prod",
             "--store", "chdb://./data/clickhouse?database=demo", "--json"],
            cwd=tmp_path, capture_output=True, timeout=300, check=True,
        )  # fmt: skip
        costs: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        for line in query.stdout.decode().splitlines():
            row = json.loads(line)
            costs[row["customer_id"]][row["currency"]] += Decimal(row["cost"])
        for customer_id, by_currency in costs.items():
            expected[(tenant_id, customer_id)] = ", ".join(
                f"{_round(cost, currency)} {currency.upper()}"
                for currency, cost in sorted(by_currency.items())
            )
    assert printed == expected
    assert len(printed) >= 8
    assert re.search(r"priced and committed 100,003 ", output)


def _round(amount: Decimal, currency: str) -> Decimal:
    places = Decimal(1) if currency in ZERO_DECIMAL else Decimal("0.01")
    return amount.quantize(places, rounding=ROUND_HALF_UP)

"""Reprocess benchmark: re-drive 1M unprocessed events of a tenant among 10M raw.

One tenant has ``table_rows`` raw events over a month; every
``unprocessed_every``-th has no processed row (the others have one). Two
figures, both in a child process that owns a temporary chdb directory:

* paging: :func:`find_unprocessed_events` pages of 1000 over the whole month,
  exactly as the reprocess consumer asks for them; ms per page at the start,
  the middle and the end of the range;
* the reprocess consumer itself on a local tansu broker: one request over the
  month, every unprocessed event re-published to the events topic (rate limit
  lifted), progress saved after each page, until the request is completed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import uuid
from dataclasses import dataclass

from worker.benchmarks.child import run_child, scratch_directory
from worker.benchmarks.store import ENVIRONMENT, MONTH, TENANT, generate_tables
from worker.dev.local_broker import LocalTansuBroker, local_settings
from worker.samples.synthetic import SAMPLE_START
from worker.store.connect import open_gateway
from worker.store.events_reads import find_unprocessed_events
from worker.store.gateway import Gateway
from worker.store.params import EventIterator, FindUnprocessedEventsParams
from worker.store.schema import migrate
from worker.stream.reprocess_request import ReprocessRequest, publish_request
from worker.stream.reprocess_run import run_reprocess

_PAGE = 1000
_EDGE_PAGES = 10  # pages averaged for "start" and "end"
_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class ReprocessBenchResult:
    table_rows: int
    unprocessed: int
    generate_s: float
    pages: int
    paging_s: float
    start_page_ms: float
    """Median of the first pages."""
    middle_page_ms: float
    end_page_ms: float
    """Median of the last full pages."""
    p99_page_ms: float
    max_page_ms: float
    consumer_republished: int
    consumer_s: float


def run_reprocess_bench(
    *, table_rows: int = 10_000_000, unprocessed_every: int = 10
) -> ReprocessBenchResult:
    """Run the benchmark in a child process (a few minutes) and return its figures."""
    figures = run_child(
        "worker.benchmarks.reprocess",
        [f"--table-rows={table_rows}", f"--unprocessed-every={unprocessed_every}"],
    )
    return ReprocessBenchResult(**figures)


def print_reprocess_bench(*, table_rows: int = 10_000_000, unprocessed_every: int = 10) -> None:
    print(
        f"reprocess: one tenant, {table_rows:,} raw events over a month, every "
        f"{unprocessed_every}th unprocessed (takes a few minutes)",
        flush=True,
    )
    r = run_reprocess_bench(table_rows=table_rows, unprocessed_every=unprocessed_every)
    print(
        f"  find_unprocessed_events, {r.pages:,} pages of {_PAGE:,} over the month "
        f"({r.unprocessed:,} events): {r.paging_s:,.1f} s, "
        f"{r.unprocessed / max(r.paging_s, 1e-9):,.0f} events/s\n"
        f"    ms per page: start {r.start_page_ms:,.0f} / middle {r.middle_page_ms:,.0f} / "
        f"end {r.end_page_ms:,.0f} (p99 {r.p99_page_ms:,.0f}, max {r.max_page_ms:,.0f})\n"
        f"  reprocess consumer (local tansu, rate limit lifted): {r.consumer_republished:,} "
        f"events re-published in {r.consumer_s:,.1f} s, "
        f"{r.consumer_republished / max(r.consumer_s, 1e-9):,.0f} events/s\n"
        f"  (tables generated in SQL in {r.generate_s:.0f} s)"
    )


# -- the child process -------------------------------------------------------


def _page_all(gateway: Gateway) -> tuple[int, list[float]]:
    """Page the month like the reprocess consumer; (events found, ms per page)."""
    found, times = 0, []
    after: EventIterator | None = None
    while True:
        params = FindUnprocessedEventsParams(
            tenant_id=TENANT,
            environment_id=ENVIRONMENT,
            start_time=SAMPLE_START,
            end_time=SAMPLE_START + MONTH,
            batch_size=_PAGE,
            after=after,
        )
        started = time.perf_counter()
        page = find_unprocessed_events(gateway, params)
        times.append((time.perf_counter() - started) * 1000)
        found += len(page)
        if len(page) < _PAGE:
            return found, times
        after = EventIterator.of(page[-1])


def _run_consumer(store_url: str) -> tuple[int, float]:
    """One request over the month through the real reprocess consumer."""
    with LocalTansuBroker() as broker:
        settings = local_settings(
            broker,
            store_url=store_url,
            topic_partitions=4,
            reprocess_rate_limit=1e9,
            log_level="WARNING",
        )
        request = ReprocessRequest(
            request_id=f"bench-{uuid.uuid4()}",
            tenant_id=TENANT,
            environment_id=ENVIRONMENT,
            start_time=SAMPLE_START,
            end_time=SAMPLE_START + MONTH,
            batch_size=_PAGE,
        )
        started = time.perf_counter()
        publish_request(settings, request)
        stats = run_reprocess(settings, exit_when_idle_s=2.0)
        elapsed = time.perf_counter() - started
    if stats.requests_completed != 1:
        raise RuntimeError(f"reprocess bench: request not completed ({stats})")
    return stats.republished, elapsed


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def main(argv: list[str] | None = None) -> int:
    """Child process entry point: measure, print the result as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m worker.benchmarks.reprocess")
    parser.add_argument("--table-rows", type=int, default=10_000_000)
    parser.add_argument("--unprocessed-every", type=int, default=10)
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(f"  [reprocess bench] {message}", file=sys.stderr, flush=True)

    with scratch_directory("reprocess-") as directory:
        store_url = f"chdb://{directory}?database=bench"
        gateway = open_gateway(store_url, timeout_s=_TIMEOUT_S)
        try:
            migrate(gateway)
            say(f"generating {args.table_rows:,} raw events and their processed rows")
            started = time.perf_counter()
            generate_tables(gateway, args.table_rows, unprocessed_every=args.unprocessed_every)
            generate_s = time.perf_counter() - started
            say("paging the month")
            paging_started = time.perf_counter()
            unprocessed, times = _page_all(gateway)
            paging_s = time.perf_counter() - paging_started
        finally:
            gateway.close()
        say("the reprocess consumer")
        republished, consumer_s = _run_consumer(store_url)
    full = times[:-1] or times  # the last page is short
    middle = len(full) // 2
    result = ReprocessBenchResult(
        table_rows=args.table_rows,
        unprocessed=unprocessed,
        generate_s=generate_s,
        pages=len(times),
        paging_s=paging_s,
        start_page_ms=statistics.median(full[:_EDGE_PAGES]),
        middle_page_ms=statistics.median(full[middle : middle + _EDGE_PAGES]),
        end_page_ms=statistics.median(full[-_EDGE_PAGES:]),
        p99_page_ms=_p99(times),
        max_page_ms=max(times),
        consumer_republished=republished,
        consumer_s=consumer_s,
    )
    print(json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The issue-13 targets of ``make bench`` in one block, next to the figures measured."""

from __future__ import annotations

from worker.benchmarks.domain import DomainBenchResult
from worker.benchmarks.pipeline import PipelineBenchResult

END_TO_END_TARGET = 50_000
"""Events/s of one worker process, end to end, all committed."""
CEILING_RATIO_TARGET = 0.6
CORE_ALONE_TARGET = 500_000
"""Events/s of the fused core on one thread, both tables' insert columns included."""
LATENCY_BEFORE_MS = (700.0, 2_500.0)
"""p50 and p99 event-to-commit latency at half load before the core (README)."""


def target_lines(domain: DomainBenchResult, pipeline: PipelineBenchResult) -> list[str]:
    """One line per target: the figure, the target, and whether it is met."""

    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    core_alone = domain.fused_core_columns_events_per_s
    p50, p99 = pipeline.latency.p50_ms, pipeline.latency.p99_ms
    latency_ok = p50 <= LATENCY_BEFORE_MS[0] and p99 <= LATENCY_BEFORE_MS[1]
    return [
        f"  end to end          : {pipeline.core.per_s:>10,.0f} events/s "
        f"(target >= {END_TO_END_TARGET:,}): {verdict(pipeline.core.per_s >= END_TO_END_TARGET)}",
        f"  share of I/O ceiling: {pipeline.ceiling_ratio:>10.2f} "
        f"(target >= {CEILING_RATIO_TARGET}): "
        f"{verdict(pipeline.ceiling_ratio >= CEILING_RATIO_TARGET)}",
        f"  core alone          : {core_alone:>10,.0f} events/s "
        f"(target >= {CORE_ALONE_TARGET:,}): {verdict(core_alone >= CORE_ALONE_TARGET)}",
        f"  latency at half load: p50 {p50:,.0f} ms, p99 {p99:,.0f} ms (before the core: "
        f"p50 {LATENCY_BEFORE_MS[0]:,.0f}, p99 {LATENCY_BEFORE_MS[1]:,.0f}): "
        f"{'not worse' if latency_ok else 'WORSE'}",
    ]


def print_targets(domain: DomainBenchResult, pipeline: PipelineBenchResult) -> None:
    print("targets (issue 13), this run:\n" + "\n".join(target_lines(domain, pipeline)))

"""Stored aggregates read ahead, while the batch before is still being written.

A batch's first-touch states (those not in memory) are read from the store
before rating. :class:`UsageBatchProcessor` may read their snapshots early -
after routing, before the pending batch's write is joined (write-behind,
ADR 0002) - so the read overlaps the write. That is sound when no state was
dropped since the pending batch was rated: every state that batch touched is
then in memory, so none of the states read ahead has rows in the write in
flight, and no other consumer writes them (a state belongs to the partition
owner of its customer). The processor enforces that rule with its drop
counter; this module only serves what was read.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping

from worker.domain.aggregates import AggregateSnapshot
from worker.domain.metering import WindowSize
from worker.domain.rating_reads import DedupKey, RatingReads, StateKey


def read_snapshots(
    reads: RatingReads, requests: Mapping[StateKey, WindowSize | None]
) -> dict[StateKey, AggregateSnapshot]:
    """Every chunk of ``reads.snapshots(requests)``, in one mapping."""
    found: dict[StateKey, AggregateSnapshot] = {}
    for chunk in reads.snapshots(requests):
        found.update(chunk)
    return found


class PrefetchedReads:
    """:class:`RatingReads` that answer snapshot requests from ``snapshots``
    read ahead where they can (one chunk first), and from ``reads`` for the
    rest; fingerprints and hash owners always come from ``reads``."""

    def __init__(self, reads: RatingReads, snapshots: Mapping[StateKey, AggregateSnapshot]) -> None:
        self._reads = reads
        self._snapshots = snapshots

    def snapshots(
        self, requests: Mapping[StateKey, WindowSize | None]
    ) -> Iterator[Mapping[StateKey, AggregateSnapshot]]:
        ahead = {key: self._snapshots[key] for key in requests if key in self._snapshots}
        if ahead:
            yield ahead
        rest = {key: size for key, size in requests.items() if key not in ahead}
        if rest:
            yield from self._reads.snapshots(rest)

    def fingerprints(self, keys: Collection[StateKey]) -> Mapping[StateKey, Iterable[int]]:
        return self._reads.fingerprints(keys)

    def hash_owners(self, keys: Collection[DedupKey]) -> Mapping[DedupKey, str]:
        return self._reads.hash_owners(keys)

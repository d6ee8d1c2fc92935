"""What the rating core reads from the store, in its own terms: the port the store implements.

The rater (:func:`worker.domain.engine.UsageRater.rate_batch`) keeps rating
state per (line item, period) and, on first touch of such a state or for a
hash it cannot rule out in memory, asks the store through
:class:`RatingReads`. The store side (``worker.store.rating_reads``) answers
with batched, chunked, tenant-scoped queries; tests answer from rows in
memory. Data flows one way: the domain defines the port, the store depends on
the domain, never the reverse.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import NamedTuple, Protocol

from worker.domain.aggregates import AggregateSnapshot
from worker.domain.metering import WindowSize


class StateKey(NamedTuple):
    """Identity of one rating state: a line item's billing period in one tenant/environment."""

    tenant_id: str
    environment_id: str
    line_item_id: str
    period_id: int
    """Period start, epoch milliseconds."""


class DedupKey(NamedTuple):
    """One unique_hash within a rating state (the scope of the dedup check)."""

    state: StateKey
    unique_hash: str


class RatingReads(Protocol):
    """The store reads rating needs. Every method blocks and may raise the
    store's error; none writes. Keys of several tenants may be passed at once:
    the implementation scopes each query by tenant and environment.
    """

    def snapshots(
        self, requests: Mapping[StateKey, WindowSize | None]
    ) -> Iterator[Mapping[StateKey, AggregateSnapshot]]:
        """Stored aggregates (``GetLineItemUsage``) of the requested states, chunk by chunk.

        ``requests`` maps each state to its meter's bucket size (None when not
        bucketed). Every requested key is in exactly one yielded chunk (an empty
        snapshot when nothing is stored). Chunks bound the size of one read; the
        caller finishes with a chunk before asking for the next.
        """
        ...

    def fingerprints(self, keys: Collection[StateKey]) -> Mapping[StateKey, Iterable[int]]:
        """The 64-bit fingerprint of every unique_hash stored for each state.

        See :func:`worker.domain.engine.fingerprint`. Every key is in the result.
        """
        ...

    def hash_owners(self, keys: Collection[DedupKey]) -> Mapping[DedupKey, str]:
        """For each key already stored, the event id that counted it (batched ``IsDuplicate``).

        When several events stored the same hash in a state (COUNT_UNIQUE
        repeats are stored with quantity 0), the owner is the one with a
        non-zero quantity, then the earliest. Keys not stored are absent.
        """
        ...

"""The store side of the rating port (:class:`~worker.domain.rating_reads.RatingReads`).

Keys are grouped by (tenant, environment) - every query is scoped by both -
and read in chunks of :data:`STORE_READ_CHUNK` keys in primary-key order, so
that no single read scans much of a large table (after a restart the first
batch touches nearly every line item). Every method blocks and raises
:class:`~worker.store.errors.StoreError`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import TypeVar

from worker.domain.aggregates import AggregateSnapshot
from worker.domain.metering import WindowSize
from worker.domain.rating_reads import DedupKey, StateKey
from worker.store.gateway import Gateway
from worker.store.processed import find_hash_owners, load_fingerprints, load_snapshots

#: Keys per state or dedup read. Sorted keys make a chunk one narrow range of
#: the primary key: on a 10M-row table, 20k keys load in 14 s as 10 reads of at
#: most 1.8 s each, where one read took 8 s (and would outgrow the query timeout).
STORE_READ_CHUNK = 2_000

K = TypeVar("K", StateKey, DedupKey)


class StoreRatingReads:
    """Rating reads through one gateway (see the module docstring for the chunking)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def snapshots(
        self, requests: Mapping[StateKey, WindowSize | None]
    ) -> Iterator[Mapping[StateKey, AggregateSnapshot]]:
        """One ``load_snapshots`` query per chunk, yielded as it is read."""
        for (tenant, environment), chunk in _scoped_chunks(requests, _state_scope):
            yield load_snapshots(
                self._gateway, tenant, environment, {key: requests[key] for key in chunk}
            )

    def fingerprints(self, keys: Collection[StateKey]) -> Mapping[StateKey, Iterable[int]]:
        """One ``load_fingerprints`` query per chunk."""
        found: dict[StateKey, Iterable[int]] = {}
        for (tenant, environment), chunk in _scoped_chunks(keys, _state_scope):
            found.update(load_fingerprints(self._gateway, tenant, environment, chunk))
        return found

    def hash_owners(self, keys: Collection[DedupKey]) -> Mapping[DedupKey, str]:
        """One ``find_hash_owners`` query per chunk."""
        owners: dict[DedupKey, str] = {}
        for (tenant, environment), chunk in _scoped_chunks(keys, _dedup_scope):
            owners.update(find_hash_owners(self._gateway, tenant, environment, chunk))
        return owners


def _state_scope(key: StateKey) -> tuple[str, str]:
    return key.tenant_id, key.environment_id


def _dedup_scope(key: DedupKey) -> tuple[str, str]:
    return key.state.tenant_id, key.state.environment_id


def _scoped_chunks(
    keys: Iterable[K], scope_of: Callable[[K], tuple[str, str]]
) -> Iterator[tuple[tuple[str, str], list[K]]]:
    """Sorted chunks of at most :data:`STORE_READ_CHUNK` keys, each of one (tenant, environment)."""
    scoped: defaultdict[tuple[str, str], list[K]] = defaultdict(list)
    for key in keys:
        scoped[scope_of(key)].append(key)
    for scope in sorted(scoped):
        ordered = sorted(scoped[scope])
        for start in range(0, len(ordered), STORE_READ_CHUNK):
            yield scope, ordered[start : start + STORE_READ_CHUNK]

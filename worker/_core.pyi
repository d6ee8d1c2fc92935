"""Type stubs of the compiled batch core (``core/``, built by maturin)."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from confluent_kafka import Message

from worker.core_decode import Messages

_Messages = Messages
_Limits = tuple[int, int, int, int, int]

_Customers = list[tuple[str, str, str, str]]
_Subscriptions = list[tuple[str, str, str, str, int, int | None, int | None]]
_Meters = list[tuple[str, str, str, str, str, list[tuple[str, list[str]]]]]
_LineItems = list[tuple[str, int, int, int | None, int]]
_Tables = tuple[_Customers, _Subscriptions, _Meters, _LineItems]
_Accepted = list[int]
"""Indices of the batch's messages that became events."""
_Rejected = list[tuple[int, str]]
"""(message index, reason code) of the messages that are no event."""
_NeedPeriods = list[tuple[int, int]]
"""(subscription, event time µs) whose billing period the core lacks: add, call again."""

def core_version() -> str: ...
def decode_batch(
    messages: _Messages, now_us: int, limits: _Limits
) -> tuple[_Accepted, _Rejected, dict[str, tuple[bytes, bytes]], bytes]: ...
def fixed_point_ops(ops: list[tuple[str, str, str]]) -> list[str | None]: ...
def usable_bytes(messages: Sequence[Message], assigned: set[tuple[str, int]]) -> int | None:
    """Total value bytes when every message is usable as is (no error, an
    offset, an assigned partition); None as soon as one is not."""

class CoreCatalog:
    def __init__(self, tables: _Tables) -> None: ...
    def add_periods(self, subscription: int, periods: list[tuple[int, int]]) -> None: ...
    def resolve_batch(
        self, messages: _Messages, now_us: int, limits: _Limits
    ) -> tuple[
        _Accepted,
        _Rejected,
        _NeedPeriods,
        list[str],
        list[tuple[int, str]],
        list[tuple[int, int, int, int, int, str, str, bool]],
    ]: ...

def rate_period(
    price: tuple[str, str, str, list[tuple[str | None, str, str]], str, str],
    aggregation: str,
    bucket: str | None,
    free_units: str,
    snapshot: tuple[str, int, str, tuple[int, str, str] | None, list[tuple[int, str]]],
    known: list[tuple[str, str]],
    events: list[tuple[str, int, str, str]],
) -> list[tuple[str, str, str, str, str, str, str] | None]: ...

_Key = tuple[str, str, str, int]
# A state key type (a tuple subclass: ``StateKey``) and a window size.
_K = TypeVar("_K", bound=tuple[str, str, str, int])
_W = TypeVar("_W")
_Price = tuple[str, str, str, list[tuple[str | None, str, str]], str, str]
_Terms = tuple[_Price, str, str, str | None]
_Snapshot = tuple[str, int, str, tuple[int, str, str] | None, list[tuple[int, str]]]
_Snapshots = Sequence[tuple[_Key, _Snapshot | None]]
_Stored = Mapping[_Key, list[int]] | None
"""Fingerprints read from the store for the states to cover (a state not in it stays uncovered)."""
_Delta = tuple[str, str, str, str, str, str, str]

class CoreRater:
    def __init__(self, max_fingerprints: int, max_remembered_owners: int) -> None: ...
    def set_terms(self, items: list[tuple[str, str, str, _Terms]]) -> None: ...
    @property
    def fingerprint_count(self) -> int: ...
    def missing_states(self, rows: list[tuple[_Key, int, str, int, str, str]]) -> list[_Key]: ...
    def coverable(self, counts: Sequence[tuple[_Key, int]]) -> list[_Key]: ...
    def load_states(self, snapshots: _Snapshots, stored_fingerprints: _Stored = None) -> None: ...
    def lookup_keys(
        self, rows: list[tuple[_Key, int, str, int, str, str]]
    ) -> list[tuple[_Key, str]]: ...
    def remember(self, owners: list[tuple[_Key, str, str]]) -> None: ...
    def rate(
        self, rows: list[tuple[_Key, int, str, int, str, str]]
    ) -> tuple[list[tuple[str, _Delta | None]], tuple[int, int, int]]: ...
    def committed(self) -> None: ...
    def forget_hashes(self) -> None: ...
    def drop_states(self, keys: list[_Key]) -> None: ...

class CoreEngine:
    def __init__(
        self,
        tables: _Tables,
        terms: list[_Terms],
        max_fingerprints: int,
        max_remembered_owners: int,
    ) -> None: ...
    def replace_catalog(self, tables: _Tables, terms: list[_Terms]) -> None: ...
    def add_periods(self, subscription: int, periods: list[tuple[int, int]]) -> None: ...
    @property
    def fingerprint_count(self) -> int: ...
    def prepare(
        self,
        messages: _Messages,
        now_us: int,
        limits: _Limits,
        periods_for: Callable[[_NeedPeriods], list[tuple[int, int, int]]] | None = None,
    ) -> tuple[
        _Accepted,
        _Rejected,
        _NeedPeriods,
        tuple[bytes, bytes],
        list[tuple[str, int]],
        int,
        tuple[dict[str, tuple[bytes, bytes]], bytes],
        list[tuple[str, int, int, int]],
    ]: ...
    def touched(
        self, key_type: type[_K], names: list[tuple[str, str, str]]
    ) -> list[tuple[tuple[str, int], _K]]: ...
    def set_line_item_columns(self, columns: list[tuple[str, ...]]) -> None: ...
    def missing_states(self) -> list[_Key]: ...
    def coverable(self, counts: Sequence[tuple[_Key, int]]) -> list[_Key]: ...
    def load_states(self, snapshots: _Snapshots, stored_fingerprints: _Stored = None) -> None: ...
    def lookup_keys(self) -> list[tuple[_Key, list[str]]]: ...
    def missing(
        self, key_type: type[_K], names: list[tuple[str, str, str]], windows: list[_W | None]
    ) -> tuple[list[_K], list[_W | None]]: ...
    def coverable_at(self, counts: Sequence[tuple[int, int]]) -> list[int]: ...
    def load_at(
        self,
        snapshots: Sequence[tuple[int, _Snapshot | None]],
        stored_fingerprints: Sequence[tuple[int, list[int]]] | None = None,
    ) -> None: ...
    def remember(self, owners: list[tuple[_Key, str, str]]) -> None: ...
    def rate(
        self, processed_at_us: int
    ) -> tuple[dict[str, Any], int, tuple[int, int, int], list[tuple[int, int, int]]]: ...
    def committed(self) -> None: ...
    def drop_states(self, keys: list[_Key]) -> None: ...

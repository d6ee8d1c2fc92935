"""The start every gateway's Arrow insert shares: names checked, columns typed, one payload.

A table's column types are read from ``system.columns`` once per gateway and
table (the schema only grows, by migrations); the rows become one Arrow IPC
stream typed by them (:func:`~worker.store.arrow_columns.insert_payload`).
"""

from __future__ import annotations

from worker.store.arrow_columns import insert_payload
from worker.store.gateway import Columns, Gateway, check_insert_names, column_types


class TypedInserts:
    """Arrow insert payloads for one gateway. Not thread-safe on its own: the
    cache is only ever filled with the same answer, so a race costs one query."""

    def __init__(self, gateway: Gateway, where: str) -> None:
        """``where`` names the gateway in messages (URL and database)."""
        self._gateway = gateway
        self._where = where
        self._types: dict[str, dict[str, str]] = {}

    def payload(self, table: str, columns: Columns) -> tuple[bytes, int]:
        """The Arrow IPC stream of ``columns`` for ``table`` and its row count.

        Raises :class:`~worker.store.errors.StoreError` for a bad name, a
        column the table does not have, a value its type cannot hold, or a
        missing table (:class:`~worker.store.errors.SchemaMissingError`).
        """
        check_insert_names(table, columns)
        types = self._types.get(table)
        if types is None:
            types = column_types(self._gateway, table, self._where)
            self._types[table] = types
        return insert_payload(table, columns, types)

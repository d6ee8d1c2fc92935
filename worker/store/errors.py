"""Errors of the store layer: one type, one line, naming what to do.

Every failure the gateway or a repository can raise is a :class:`StoreError`
(or a subclass) whose message is one line a person can act on; the original
driver exception is kept as ``__cause__`` for logs.
"""

from __future__ import annotations

import re

MIGRATE_HINT = "run `events-worker migrate` (with the same --store)"

_CODE = re.compile(r"Code: (\d+)\.")

#: ClickHouse error codes that mean "the schema is not there".
UNKNOWN_TABLE = 60
UNKNOWN_DATABASE = 81
AUTHENTICATION_FAILED = 516


class StoreError(Exception):
    """A store failure with a one-line, actionable message."""


class SchemaMissingError(StoreError):
    """The database or a table is missing or older than this code: run migrate."""


def error_code(message: str) -> int | None:
    """The ClickHouse error code in an exception message (``Code: 60. ...``), if any."""
    match = _CODE.search(message)
    return int(match.group(1)) if match else None


def first_line(message: str, limit: int = 300) -> str:
    """The first line of a server message, shortened to ``limit`` characters."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def one_line(message: str, limit: int = 600) -> str:
    """The whole message on one line (for errors whose detail follows the first line)."""
    line = " ".join(message.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def translate(code: int | None, message: str, where: str) -> StoreError:
    """Map a ClickHouse error (code + message) to a :class:`StoreError` for ``where``.

    Without a ClickHouse code (an error of the client library itself, such as
    a binding's argument check) the whole message is kept, on one line.
    """
    detail = first_line(message) if code is not None else one_line(message)
    if code in (UNKNOWN_TABLE, UNKNOWN_DATABASE):
        return SchemaMissingError(f"schema missing in {where} ({detail}): {MIGRATE_HINT}")
    if code == AUTHENTICATION_FAILED:
        return StoreError(
            f"ClickHouse at {where} refused the credentials: check user and password in the URL"
        )
    return StoreError(f"ClickHouse error in {where}: {detail}")

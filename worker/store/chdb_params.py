"""Query parameters for chdb, which sends every value as text.

chdb passes ``str(value)`` as the parameter's text, parsed by ClickHouse in
its escaped (TSV) text form: backslashes and tabs must be escaped, NULL is
``\\N``, DateTime64 refuses an offset such as ``+00:00``. Arrays and tuples
are passed as ClickHouse literals (quoted strings). Values never reach the
SQL text: this is the text of a parameter, parsed by the type it declares.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

_TSV_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\b": "\\b", "\f": "\\f"}
)
_LITERAL_ESCAPES = str.maketrans({"\\": "\\\\", "'": "\\'", "\0": "\\0"})


def utc_text(value: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC; naive datetimes are refused."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware (UTC) datetime")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _literal(value: Any) -> str:
    """A ClickHouse literal for an element of an Array / Tuple parameter."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, str):
        return "'" + value.translate(_LITERAL_ESCAPES) + "'"
    if isinstance(value, datetime):
        return "'" + utc_text(value) + "'"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(item) for item in value) + ")"
    raise TypeError(f"unsupported parameter value of type {type(value).__name__}")


def param_text(value: Any) -> str:
    """The text chdb must receive for ``value``."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_TSV_ESCAPES)
    if isinstance(value, datetime):
        return utc_text(value)
    return _literal(value)


def adapt_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Every parameter as chdb-ready text."""
    return {name: param_text(value) for name, value in (params or {}).items()}

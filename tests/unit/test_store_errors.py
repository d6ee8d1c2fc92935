"""Store errors: one line each, with the part of the message that explains them."""

from __future__ import annotations

from worker.store.errors import SchemaMissingError, translate

WHERE = "chdb:///data (database default)"


def test_a_clickhouse_error_keeps_its_first_line_only() -> None:
    message = "Code: 62. DB::Exception: Syntax error: failed at position 8\n0. stack frame\n1. more"
    error = translate(62, message, WHERE)
    assert str(error) == f"ClickHouse error in {WHERE}: {message.splitlines()[0]}"


def test_a_client_library_error_keeps_its_detail_on_one_line() -> None:
    # pybind11 puts what was passed on the lines after the first.
    message = (
        "query(): incompatible function arguments. The following argument types are supported:\n"
        "    1. (self: connect, query_str: str, format: str = 'CSV') -> query_result\n\n"
        "Invoked with: <connect object>, None, 'CSV'"
    )
    text = str(translate(None, message, WHERE))
    assert "\n" not in text
    assert "Invoked with: <connect object>, None, 'CSV'" in text


def test_a_missing_table_says_to_migrate() -> None:
    error = translate(60, "Code: 60. DB::Exception: Unknown table expression identifier", WHERE)
    assert isinstance(error, SchemaMissingError)
    assert "run `events-worker migrate`" in str(error)

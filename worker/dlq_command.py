"""``events-worker dlq list | redrive``: what is in the DLQ and why; send some back.

Selection for ``redrive`` (all given filters must match): ``--at P:O`` (one
or more positions in the DLQ topic), ``--reason R``; ``--all`` instead of any
filter re-drives everything. Nothing is re-driven when nothing matches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from worker.stream.dlq import HEADER_ERROR, HEADER_REASON, HEADER_SOURCE_TOPIC
from worker.stream.dlq_tools import DeadLetterRecord


class SelectionError(ValueError):
    """The selection flags are inconsistent or malformed (a user error)."""


def parse_positions(texts: Sequence[str]) -> set[tuple[int, int]]:
    """``["0:12", "2:5"]`` -> {(0, 12), (2, 5)}; raises :class:`SelectionError`."""
    positions = set()
    for text in texts:
        partition, _, offset = text.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise SelectionError(f"--at: {text!r} is not PARTITION:OFFSET (e.g. 0:12)")
        positions.add((int(partition), int(offset)))
    return positions


def select(
    letters: Sequence[DeadLetterRecord],
    *,
    positions: set[tuple[int, int]],
    reason: str | None,
    everything: bool,
) -> list[DeadLetterRecord]:
    """The dead letters the flags name (module docstring)."""
    if everything == bool(positions or reason):
        raise SelectionError("redrive: give --at P:O and/or --reason R, or --all")
    return [
        letter
        for letter in letters
        if everything
        or (
            (not positions or (letter.partition, letter.offset) in positions)
            and (reason is None or letter.header(HEADER_REASON) == reason)
        )
    ]


def print_letters(
    letters: Sequence[DeadLetterRecord], out: TextIO, *, as_json: bool, topic: str
) -> None:
    """One line (or JSON object) per dead letter, then a count by reason (text only)."""
    for letter in letters:
        document: dict[str, Any] = {
            "at": letter.position,
            "reason": letter.header(HEADER_REASON),
            "error": letter.header(HEADER_ERROR),
            "source_topic": letter.header(HEADER_SOURCE_TOPIC),
            "key": (letter.key or b"").decode("utf-8", "replace"),
            "value": (letter.value or b"")[:200].decode("utf-8", "replace"),
        }
        if as_json:
            out.write(orjson.dumps(document).decode() + "\n")
        else:
            print(
                f"{document['at']}  {document['reason']}  key={document['key']!r}  "
                f"{document['error']}  value={document['value'][:80]!r}",
                file=out,
            )
    if not as_json:
        counts = Counter(letter.header(HEADER_REASON) for letter in letters)
        summary = ", ".join(f"{n} {why}" for why, n in sorted(counts.items())) or "none"
        print(f"{len(letters)} dead letters in {topic}: {summary}", file=out)

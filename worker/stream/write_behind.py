"""Write-behind (ADR 0002): one batch's write on a helper thread while the next is collected.

:class:`BackgroundWrite` runs one attempt of a batch's write on its own
thread; :class:`PendingBatch` is the batch it belongs to, everything the usage
consumer needs to finish it later (dead letters, commit, records) or to
abandon it. At most one batch is pending at a time; what to do with it, and
when, is :class:`~worker.stream.usage_consumer.UsageConsumer`'s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message

from worker.stream.usage_batch import PreparedBatch, SourceMessage


class BackgroundWrite:
    """One attempt of ``write`` on a daemon thread, started at construction.

    The outcome (None, or what ``write`` raised) is read after :meth:`join`.
    ``write`` must bound its own blocking (the store gateway's timeouts do),
    since :meth:`join` waits without one.
    """

    def __init__(self, write: Callable[[], None]) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None
        self.seconds = 0.0
        """How long the attempt took (known once finished)."""
        self._thread = threading.Thread(
            target=self._run, args=(write,), name="write-behind", daemon=True
        )
        self._thread.start()

    def _run(self, write: Callable[[], None]) -> None:
        started = time.perf_counter()
        try:
            write()
        except BaseException as exc:  # handed to the thread that joins
            self._error = exc
        finally:
            self.seconds = time.perf_counter() - started
            self._done.set()

    def succeeded(self) -> bool:
        """Finished without an error (never blocks)."""
        return self._done.is_set() and self._error is None

    def join(self) -> BaseException | None:
        """Wait for the attempt; what it raised, or None when the rows are durable."""
        self._thread.join()
        return self._error


@dataclass(slots=True)
class PendingBatch:
    """A prepared batch whose write runs behind the collect, not yet committed."""

    raw: list[Message]
    """The consumed messages, in batch order (carried again if it is abandoned)."""
    messages: Sequence[SourceMessage]
    prepared: PreparedBatch
    write: BackgroundWrite
    durations: dict[str, float] = field(default_factory=dict)
    finishing: bool = False
    """The polling thread is finishing it (joined, retrying, committing): a
    rebalance callback served meanwhile leaves it to that thread."""

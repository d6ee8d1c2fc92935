"""What the local services of :mod:`worker.dev` share: a context manager and a log tail."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Final, Self

HOST: Final = "127.0.0.1"
"""Where local services listen: loopback only."""
LOG_TAIL_LINES: Final = 40
"""Lines of a service's log an error message carries."""


class LocalService(ABC):
    """A process started on this machine for tests, benchmarks or the demo.

    ``with service:`` calls :meth:`start` (blocks until the service answers,
    or raises) and, on leaving, :meth:`close` (idempotent, never raises for a
    service that already died).
    """

    @abstractmethod
    def start(self) -> None:
        """Start the process; block until it serves."""

    @abstractmethod
    def close(self) -> None:
        """Stop the process and release what it holds. Idempotent."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the log at ``path`` ("" when there is none)."""
    if path is None or not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])

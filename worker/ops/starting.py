"""SIGTERM/SIGINT while a consumer starts: exit 0, nothing consumed.

DESIGN.md §9: SIGTERM finishes the batch, commits and exits 0. Before the
consumer loop installs its own handlers (``StopOnSignals``) the worker may
spend a while starting: importing, connecting, migrating, waiting for a
catalog. A signal then would kill the process with Python's default action
(-15), without a word. :class:`StopWhileStarting` covers that time: the
signal raises :class:`StoppedWhileStarting` (a ``BaseException``, so no
``except Exception`` of a retry loop swallows it), and the command reports it
and exits 0; nothing was consumed or committed yet. Once a loop has taken the
signals over, the guard ignores them when they come back to it (the loop has
ended and the consumer is closing, as the loop's own handler would).

This module imports nothing heavy: the guard is installed before the
consumer's imports.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StoppedWhileStarting(BaseException):
    """A stop signal arrived before a consumer loop took the signals over."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum} while starting")
        self.signum = signum


class SignalHandlers:
    """Context manager: ``handler`` serves SIGTERM and SIGINT; the previous
    handlers (``previous``, by signal) are restored on exit. Outside the main
    thread (tests) signals cannot be handled and it does nothing."""

    def __init__(self, handler: Callable[[int, FrameType | None], None]) -> None:
        self._handler = handler
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> SignalHandlers:
        try:
            for signum in _SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handler)
        except ValueError:  # not the main thread
            pass
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()


class StopWhileStarting(SignalHandlers):
    """Context manager around a consumer command: see the module docstring."""

    def __init__(self) -> None:
        super().__init__(self._stop)
        self.loop_started = False

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.loop_started:
            raise StoppedWhileStarting(signum)


def loop_takes_over(replaced: SignalHandlers) -> None:
    """Called by a consumer loop once its handlers are installed: a
    :class:`StopWhileStarting` guard they replaced ignores signals from now on."""
    for previous in replaced.previous.values():
        guard = getattr(previous, "__self__", None)
        if isinstance(guard, StopWhileStarting):
            guard.loop_started = True

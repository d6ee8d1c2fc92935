"""Safety checks between loading the catalog and consuming events (issue 15).

* An empty catalog is not a catalog: with no customers every event would be
  committed as ``unknown_customer``. A file that holds none stops the start
  (a user error); on the topic the worker waits for entities without
  consuming, says why on ``/readyz`` and in a periodic log line, and with
  ``--exit-when-idle`` gives up after that long (exit 2).
  ``EW_ALLOW_EMPTY_CATALOG=true`` opts out.
* Rejected catalog topic entities are dead-lettered with their reason,
  counted in ``events_worker_catalog_rejected_total`` and named on ``/readyz``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Message

from worker.domain.catalog import CatalogError
from worker.domain.catalog_index import CatalogIndex
from worker.ops.health import LoopHealth
from worker.ops.metrics import Metrics
from worker.stream.catalog_source import REJECTED_REASON, CatalogTopicSource
from worker.stream.dlq import DeadLetterError, DeadLetterProducer

log = logging.getLogger(__name__)

#: How often the waiting worker repeats why it does not consume (seconds).
EMPTY_LOG_EVERY_S = 30.0
#: Longest a rejected entity's dead letter may take to be acknowledged (seconds).
_DLQ_ACK_TIMEOUT_S = 10.0


class EmptyCatalogError(CatalogError):
    """The catalog has no customers and the settings do not allow that."""


def is_empty(index: CatalogIndex) -> bool:
    """No customer at all: every event would be ``unknown_customer``."""
    return index.customer_count == 0


def refuse_empty_file(index: CatalogIndex, path: str) -> None:
    """Raise :class:`EmptyCatalogError` for a catalog file without customers."""
    if is_empty(index):
        raise EmptyCatalogError(
            f"catalog file {path} has no customers: every event would be committed unpriced "
            "(unknown_customer); add the catalog's entities, or set EW_ALLOW_EMPTY_CATALOG=true "
            "to run without any"
        )


def wait_for_entities(
    source: CatalogTopicSource,
    index: CatalogIndex,
    *,
    health: LoopHealth,
    give_up_after_s: float | None,
    poll_s: float = 1.0,
    log_every_s: float = EMPTY_LOG_EVERY_S,
    clock: Callable[[], float] = time.monotonic,
) -> CatalogIndex:
    """Block until the catalog topic holds a customer; return that index.

    While waiting nothing is consumed, ``/readyz`` answers 503 with the cause
    and the cause is logged every ``log_every_s``. Raises
    :class:`EmptyCatalogError` after ``give_up_after_s`` (``None``: wait for ever).
    """
    if not is_empty(index):
        return index
    reason = (
        f"catalog topic {source.topic} has no customers: not consuming events until it has "
        "(publish one with `events-worker catalog publish FILE`, or set "
        "EW_ALLOW_EMPTY_CATALOG=true)"
    )
    health.catalog_waiting(reason)
    started = clock()
    logged_at: float | None = None
    while is_empty(index):
        now = clock()
        if give_up_after_s is not None and now - started >= give_up_after_s:
            raise EmptyCatalogError(f"{reason}; gave up after {give_up_after_s:g}s")
        if logged_at is None or now - logged_at >= log_every_s:
            log.warning("%s", reason)
            logged_at = now
        health.beat()
        index = source.poll_updates(poll_s) or index
    health.catalog_loaded()
    log.info("catalog topic %s now has entities: consuming", source.topic)
    return index


def rejection_handler(
    dlq: DeadLetterProducer, metrics: Metrics, health: LoopHealth
) -> Callable[[Message, str], None]:
    """What the usage worker does with a rejected catalog entity (module docstring).

    A dead letter that cannot be delivered is logged, not raised: the catalog
    keeps working and the rejection stays visible in the metric and ``/readyz``.
    """

    def reject(message: Message, reason: str) -> None:
        key = (message.key() or b"").decode(errors="replace")
        metrics.catalog_rejected.inc()
        health.catalog_rejected(f"{key}: {reason}")
        try:
            dlq.send_message(message, reason=REJECTED_REASON, error=reason)
            dlq.flush_and_check(_DLQ_ACK_TIMEOUT_S)
        except DeadLetterError as exc:
            log.error("catalog entity %s could not be dead-lettered: %s", key, exc)
            dlq.reset_after_failure()

    return reject

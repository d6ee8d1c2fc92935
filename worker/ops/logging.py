"""Structured JSON logs: structlog renders every record, ours and the libraries'.

Our modules log with ``logging.getLogger(__name__)`` and pass context as
``extra={...}`` (topic, partition, offset, tenant, reason, sizes, durations);
:func:`configure_logging` installs one root handler whose formatter is
structlog's ``ProcessorFormatter`` with a JSON renderer, so stdlib records,
structlog loggers and librdkafka's log lines (see :func:`with_kafka_logger`)
come out as one JSON object per line on stderr.

Secrets never reach the output: log ``settings.redacted()``, never the
settings, and as a second line of defence every rendered value is scrubbed of
the secret strings found in the settings (SASL/SSL passwords in
``EW_KAFKA_EXTRA``, the store URL's password).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

import structlog

from worker.ops.kafka_reachability import (
    KAFKA_LOGGER,
    BrokerReachability,
    log_report,
    with_reachability,
)
from worker.ops.settings import WorkerSettings, is_secret_key
from worker.store.url import REDACTED

__all__ = ["KAFKA_LOGGER", "configure_logging", "secret_values", "with_kafka_logger"]

_HANDLER_NAME = "events-worker-json"


def secret_values(settings: WorkerSettings) -> list[str]:
    """The secret strings in ``settings``: never to appear in logs or output."""
    secrets = [
        str(value)
        for key, value in settings.kafka_extra.items()
        if is_secret_key(key) and value not in (None, "")
    ]
    try:
        password = urlsplit(settings.store_url).password
    except ValueError:
        password = None
    if password:
        secrets.extend({password, unquote(password)})
    return [secret for secret in secrets if len(secret) >= 3]


class _Scrub:
    """structlog processor: replace every secret string inside rendered values."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted(set(secrets), key=len, reverse=True)

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self._secrets:
            return event
        for key, value in event.items():
            event[key] = self._scrub(value)
        return event

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self._scrub(str(value))


def _drop_formatted_message(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``logging.Formatter`` leaves ``record.message`` behind: it repeats ``event``."""
    event.pop("message", None)
    return event


def configure_logging(
    level: str = "INFO",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send all logging to ``stream`` (default stderr) as JSON lines at ``level``.

    Idempotent: replaces the handler a previous call installed. Returns the
    handler (tests may remove it). Raises ``ValueError`` for an unknown level.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_formatted_message],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _Scrub(secrets),
            structlog.processors.JSONRenderer(sort_keys=False, default=str),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler


def with_kafka_logger(
    settings: WorkerSettings, *, on_reachability: Callable[[bool], None] | None = None
) -> WorkerSettings:
    """``settings`` whose Kafka clients send librdkafka's log lines to :data:`KAFKA_LOGGER`.

    confluent-kafka takes a ``logger`` client property; the lines are then
    served by the client's own ``poll``/``consume``/``flush`` calls and carry
    the librdkafka facility in the message. Connection noise is folded into
    two lines of our own (unreachable, back: see
    :mod:`worker.ops.kafka_reachability`); ``on_reachability(down)`` is told
    of each change (metrics). Log the original settings' ``redacted()``, not
    this copy (it holds a logger and callbacks).
    """
    reachability = BrokerReachability(
        settings.kafka_bootstrap, log_report, on_change=on_reachability
    )
    return with_reachability(settings, reachability)

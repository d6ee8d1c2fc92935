"""Ask librdkafka whether ``EW_KAFKA_EXTRA`` is a valid client configuration.

librdkafka knows its ~200 properties and their value ranges; guessing them
here would drift. Building a client without ``bootstrap.servers`` checks
every key and value and opens no connection.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

#: librdkafka's notes about properties of the other client kind go nowhere.
_QUIET = logging.getLogger("worker.ops.kafka_config_check.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

#: Keys the worker sets itself per client; checked as part of the extras anyway.
_NOT_CHECKED = frozenset({"bootstrap.servers"})


def kafka_extra_problem(extra: dict[str, Any]) -> str | None:
    """librdkafka's one-line objection to ``extra`` (keys or values), or None.

    Checked as both a consumer and a producer configuration (the worker uses
    both), each client closed at once. Blocking for a few milliseconds.
    """
    if not extra:
        return None
    config = {key: value for key, value in extra.items() if key not in _NOT_CHECKED}
    for build in (_consumer, _producer):
        try:
            build(config)
        except (KafkaException, ValueError, TypeError) as exc:
            detail = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
            return f"librdkafka refuses it: {detail} (fix or remove that property)"
    return None


def _consumer(config: dict[str, Any]) -> None:
    Consumer({"group.id": "events-worker-config-check", **config, "logger": _QUIET}).close()


def _producer(config: dict[str, Any]) -> None:
    Producer({**config, "logger": _QUIET}).flush(0)

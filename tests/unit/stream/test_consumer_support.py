"""Shared consumer-loop pieces: the idle-exit rule, signal handling, consumer config."""

from __future__ import annotations

import os
import signal

import pytest

from worker.ops.settings import WorkerSettings
from worker.stream.consumer_support import StopOnSignals, group_consumer_config, idle_long_enough


@pytest.mark.parametrize(
    ("idle_for_s", "busy", "assigned_once", "expected"),
    [
        (2.9, False, True, False),
        (3.0, False, True, True),
        (30.0, True, True, False),  # a batch in flight is never idle
        (3.0, False, False, False),  # before any assignment: + 3 session timeouts
        (20.9, False, False, False),
        (21.0, False, False, True),
    ],
)
def test_idle_rule(idle_for_s: float, busy: bool, assigned_once: bool, expected: bool) -> None:
    assert (
        idle_long_enough(
            idle_s=3.0,
            idle_for_s=idle_for_s,
            busy=busy,
            assigned_once=assigned_once,
            session_timeout_ms=6000,
        )
        is expected
    )


def test_no_idle_exit_unless_asked() -> None:
    assert not idle_long_enough(
        idle_s=None, idle_for_s=1e9, busy=False, assigned_once=True, session_timeout_ms=6000
    )


def test_sigterm_inside_the_context_calls_stop_and_handlers_are_restored() -> None:
    calls: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignals(lambda: calls.append("stop"), "stopping"):
        os.kill(os.getpid(), signal.SIGTERM)
    assert calls == ["stop"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_group_consumer_commits_explicitly_and_keeps_extra_settings() -> None:
    settings = WorkerSettings(
        kafka_bootstrap="b:9092",
        kafka_session_timeout_ms=6000,
        kafka_extra={"fetch.max.bytes": 2_000_000},
    )
    config = group_consumer_config(settings, "g")
    assert config["group.id"] == "g" and config["bootstrap.servers"] == "b:9092"
    assert config["enable.auto.commit"] is False and config["enable.auto.offset.store"] is False
    assert config["session.timeout.ms"] == 6000 and config["fetch.max.bytes"] == 2_000_000

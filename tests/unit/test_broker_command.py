"""``events-worker broker``'s default port: the one the other commands will dial."""

from __future__ import annotations

import pytest

from worker.broker_command import DEFAULT_PORT, default_port
from worker.ops.settings import WorkerSettings


@pytest.mark.parametrize(
    ("bootstrap", "port"),
    [
        ("127.0.0.1:9300", 9300),
        ("localhost:9301,127.0.0.1:9302", 9301),
        ("[::1]:9303", 9303),
        ("kafka.example.com:9304", DEFAULT_PORT),
        ("127.0.0.1", DEFAULT_PORT),
    ],
)
def test_a_loopback_bootstrap_names_the_port(bootstrap: str, port: int) -> None:
    assert default_port(WorkerSettings(kafka_bootstrap=bootstrap)) == port

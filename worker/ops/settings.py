"""Worker settings: ``EW_*`` environment variables, overridden by command-line flags.

One frozen settings object is built at start-up and passed down; nothing reads
the environment elsewhere. Secrets (SASL passwords, TLS key passwords, store
credentials) are kept out of ``repr`` and logs: see :meth:`WorkerSettings.redacted`.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.domain.engine import DEFAULT_MAX_FINGERPRINTS
from worker.store.ddl import ClusterLayout
from worker.store.errors import StoreError

#: The values of ``EW_KAFKA_GROUP_PROTOCOL``.
GroupProtocol = Literal["eager", "cooperative-sticky", "consumer"]
#: librdkafka properties ``EW_KAFKA_GROUP_PROTOCOL`` decides; ``EW_KAFKA_EXTRA`` may not set them.
GROUP_PROTOCOL_KEYS = frozenset({"group.protocol", "partition.assignment.strategy"})

_SECRET_KEY = re.compile(r"(password|secret|token|key|credential)", re.IGNORECASE)
REDACTED = "***"


class WorkerSettings(BaseSettings):
    """Every tunable of the worker. Environment: ``EW_<FIELD NAME IN UPPER CASE>``."""

    model_config = SettingsConfigDict(env_prefix="EW_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_session_timeout_ms: int = Field(default=45_000, ge=1_000)
    kafka_extra: dict[str, Any] = Field(default_factory=dict, repr=False)
    # -- consumer-group protocol (issue 17; README "Consumer-group protocols") --
    kafka_group_protocol: GroupProtocol = "eager"
    """How the usage and reprocess groups rebalance: ``eager`` (classic protocol,
    range/roundrobin: every rebalance revokes everything), ``cooperative-sticky``
    (classic protocol, incremental) or ``consumer`` (KIP-848, Kafka 4+; the
    broker assigns, and owns the session timeout)."""
    store_url: str = Field(default="chdb://./data/clickhouse", repr=False)
    clickhouse_cluster: str | None = None
    """Lay the schema out on this ClickHouse cluster (``remote_servers`` name):
    Replicated tables behind Distributed ones, ON CLUSTER DDL. ``None``: one server."""
    http_port: int = Field(default=9108, ge=0, le=65_535)
    log_level: str = "INFO"
    health_stall_seconds: float = Field(default=60.0, gt=0)
    """``/healthz`` fails when work waits and the loop has not iterated, or not
    committed, for this long."""

    events_topic: str = "events"
    dlq_topic: str = "events.dlq"
    catalog_topic: str = "events.catalog"
    reprocess_topic: str = "events.reprocess"
    usage_group: str = "events-worker-usage"
    reprocess_group: str = "events-worker-reprocess"
    topic_partitions: int = Field(default=12, ge=1)

    batch_max_events: int = Field(default=20_000, ge=1)
    batch_max_wait_ms: int = Field(default=500, ge=1)
    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    max_properties: int = Field(default=256, ge=1)
    dedup_memory_hashes: int = Field(default=DEFAULT_MAX_FINGERPRINTS, ge=0)
    """Unique-hash fingerprints the usage consumer keeps in memory (about 70
    bytes each) so that new events need no dedup query; past it the largest
    (line item, period) states fall back to querying ClickHouse."""
    reprocess_rate_limit: float = Field(default=5000.0, gt=0)
    """Events per second the reprocess consumer re-publishes, at most (per process)."""

    fault_crash_after_writes: int = Field(default=0, ge=0)
    """Fault injection for crash tests only: after this many batch writes the
    process exits hard (``os._exit``) before committing. 0 = never."""

    @field_validator("kafka_extra", mode="before")
    @classmethod
    def _parse_extra(cls, value: Any) -> Any:
        if isinstance(value, str):
            import orjson

            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ValueError("EW_KAFKA_EXTRA must be a JSON object") from None
        if not isinstance(value, dict):
            raise ValueError("EW_KAFKA_EXTRA must be a JSON object")
        clashes = sorted(GROUP_PROTOCOL_KEYS.intersection(value))
        if clashes:
            raise ValueError(
                f"EW_KAFKA_EXTRA may not set {', '.join(clashes)}: "
                "choose the group protocol with EW_KAFKA_GROUP_PROTOCOL"
            )
        return value

    @field_validator("clickhouse_cluster")
    @classmethod
    def _check_cluster(cls, value: str | None) -> str | None:
        if value:
            try:
                ClusterLayout(value)
            except StoreError as exc:
                raise ValueError(str(exc)) from None
        return value or None

    @property
    def cluster_layout(self) -> ClusterLayout | None:
        """The schema layout :func:`~worker.store.schema.migrate` applies."""
        return ClusterLayout(self.clickhouse_cluster) if self.clickhouse_cluster else None

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties for a client: bootstrap, extras, then ``overrides``."""
        config: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap}
        config.update(self.kafka_extra)
        config.update(overrides)
        return config

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict safe to log: secrets replaced by ``***``."""
        data = self.model_dump()
        data["kafka_extra"] = redact_mapping(self.kafka_extra)
        data["store_url"] = redact_url(self.store_url)
        return data


def redact_mapping(values: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``values`` with secret-looking keys' values replaced."""
    return {key: REDACTED if _SECRET_KEY.search(key) else value for key, value in values.items()}


def redact_url(url: str) -> str:
    """``scheme://user:***@host/...``: the password of a URL is never shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    # Rebuild from the raw netloc: ``parts.port`` raises on a malformed port.
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:{REDACTED}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

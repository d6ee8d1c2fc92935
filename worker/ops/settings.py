"""Worker settings: ``EW_*`` environment variables, overridden by command-line flags.

One frozen settings object is built at start-up and passed down; nothing reads
the environment elsewhere. Secrets (SASL passwords, TLS key passwords, store
credentials) are kept out of ``repr`` and logs: see :meth:`WorkerSettings.redacted`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.domain.engine import DEFAULT_MAX_FINGERPRINTS
from worker.store.ddl import ClusterLayout
from worker.store.errors import StoreError
from worker.store.url import REDACTED, parse_store_url, redact_url

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
#: Session timeout of local runs (loopback brokers): joins in seconds, not ~22 s.
LOCAL_SESSION_TIMEOUT_MS = 6_000
#: Host names of this machine in a bootstrap list (IPv6 with or without brackets).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _all_loopback(bootstrap: str) -> bool:
    """Whether every ``host:port`` of a bootstrap list is on this machine."""
    hosts = [entry.strip().rsplit(":", 1)[0] for entry in bootstrap.split(",") if entry.strip()]
    return bool(hosts) and all(host in LOOPBACK_HOSTS for host in hosts)


_SECRET_KEY = re.compile(r"(password|secret|token|key|credential|jaas)", re.IGNORECASE)
_SECRET_PREFIXES = ("sasl.", "ssl.")
_PUBLIC_SECURITY_KEYS = frozenset(
    {
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.kerberos.service.name",
        "sasl.oauthbearer.method",
        "ssl.endpoint.identification.algorithm",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.keystore.location",
        "ssl.crl.location",
        "ssl.cipher.suites",
        "ssl.curves.list",
        "ssl.sigalgs.list",
        "enable.ssl.certificate.verification",
    }
)

#: The values of ``EW_KAFKA_GROUP_PROTOCOL``.
GroupProtocol = Literal["eager", "cooperative-sticky", "consumer"]
#: librdkafka properties ``EW_KAFKA_GROUP_PROTOCOL`` decides; ``EW_KAFKA_EXTRA`` may not set them.
GROUP_PROTOCOL_KEYS = frozenset({"group.protocol", "partition.assignment.strategy"})
#: librdkafka properties the worker always sets itself, so a value in
#: ``EW_KAFKA_EXTRA`` would be ignored or, for ``bootstrap.servers``, would
#: silently point the worker at other brokers than it says: what to use instead.
WORKER_OWNED_KEYS: Mapping[str, str] = {
    "bootstrap.servers": "set the brokers with --bootstrap or EW_KAFKA_BOOTSTRAP",
    "group.id": "name the groups with EW_USAGE_GROUP and EW_REPROCESS_GROUP",
    "session.timeout.ms": "use EW_KAFKA_SESSION_TIMEOUT_MS",
    "max.poll.interval.ms": "it follows EW_KAFKA_SESSION_TIMEOUT_MS (at least 5 minutes)",
    "enable.auto.commit": "the worker commits offsets itself, once the rows are durable",
    "enable.auto.offset.store": "the worker commits offsets itself, once the rows are durable",
    "auto.offset.reset": "a group without offsets reads from the earliest message",
    "acks": "the worker's producers always wait for all in-sync replicas",
    "enable.idempotence": "the worker's producers are always idempotent",
}


def is_secret_key(key: str) -> bool:
    """Whether a librdkafka property's value must never be shown.

    Every ``sasl.*`` and ``ssl.*`` property is secret except a short list of
    mechanism names, the user name (shown like a store URL's) and file
    locations: ``sasl.oauthbearer.config``, for one, carries client secrets
    without saying so in its name. Elsewhere, any key that names a password,
    secret, token, key, credential or JAAS config.
    """
    name = key.strip().lower()
    if name in _PUBLIC_SECURITY_KEYS:
        return False
    return name.startswith(_SECRET_PREFIXES) or _SECRET_KEY.search(name) is not None


class WorkerSettings(BaseSettings):
    """Every tunable of the worker. Environment: ``EW_<FIELD NAME IN UPPER CASE>``."""

    model_config = SettingsConfigDict(env_prefix="EW_", frozen=True, extra="ignore")

    kafka_bootstrap: str = DEFAULT_BOOTSTRAP
    kafka_session_timeout_ms: int = Field(default=45_000, ge=1_000)
    """45 s, or :data:`LOCAL_SESSION_TIMEOUT_MS` when unset and every bootstrap
    host is loopback (tansu makes a group's first join wait half of it)."""
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
    http_host: str = Field(default="127.0.0.1", min_length=1, max_length=253)
    """Address ``/metrics``, ``/healthz`` and ``/readyz`` listen on. Loopback by
    default; containers set ``0.0.0.0`` (the image and ``deploy/`` do) so that
    Prometheus and the kubelet reach them."""
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
    batch_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024, le=1024**3)
    """A batch is also cut once its messages hold this many bytes (it always takes
    at least one); the consumer's fetches and its prefetch queue are sized to
    it, so message memory stays within about twice this."""
    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    max_properties: int = Field(default=256, ge=1)
    dedup_memory_hashes: int = Field(default=DEFAULT_MAX_FINGERPRINTS, ge=0)
    """Unique-hash fingerprints the usage consumer keeps in memory (about 70
    bytes each) so that new events need no dedup query; past it the largest
    (line item, period) states fall back to querying ClickHouse."""
    engine: Literal["python", "core"] = "core"
    """``core`` (default): the usage consumer runs each batch through the
    compiled core (decode, route, measure, rating state, rate; both tables'
    rows as Arrow columns). ``python``: the reference engine the core is
    differential-tested against, kept as a fallback. See docs/core.md."""
    reprocess_rate_limit: float = Field(default=5000.0, gt=0)
    """Events per second the reprocess consumer re-publishes, at most (per process)."""

    # -- safe by default (issue 15) ---------------------------------------------
    topic_replication_factor: int = Field(default=-1, ge=-1)
    """Replication factor of the topics the worker creates; -1 (default): the
    broker's ``default.replication.factor``. See docs/topics.md."""
    create_topics: bool = True
    """Create missing topics at start. ``false`` for clusters that forbid it:
    a missing topic then stops the command with its name (docs/topics.md)."""
    allow_empty_catalog: bool = False
    """Let ``run usage`` consume with a catalog that has no customers (every
    event is then stored unpriced as ``unknown_customer``). Off: a catalog
    file without customers stops the start; an empty catalog topic is waited
    for (see :mod:`worker.stream.catalog_guard`)."""

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
        owned = sorted(WORKER_OWNED_KEYS.keys() & value.keys())
        if owned:
            raise ValueError(
                f"EW_KAFKA_EXTRA may not set {owned[0]}: {WORKER_OWNED_KEYS[owned[0]]}"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _local_session_timeout(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and data.get("kafka_session_timeout_ms") is None
            and _all_loopback(str(data.get("kafka_bootstrap", DEFAULT_BOOTSTRAP)))
        ):
            return {**data, "kafka_session_timeout_ms": LOCAL_SESSION_TIMEOUT_MS}
        return data

    @model_validator(mode="after")
    def _batch_holds_a_message(self) -> WorkerSettings:
        if self.batch_max_bytes < self.max_message_bytes:
            raise ValueError(
                f"EW_BATCH_MAX_BYTES ({self.batch_max_bytes}) must be at least "
                f"EW_MAX_MESSAGE_BYTES ({self.max_message_bytes})"
            )
        return self

    @field_validator("topic_replication_factor")
    @classmethod
    def _check_replication_factor(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (the broker's default.replication.factor) or >= 1")
        return value

    @field_validator("store_url")
    @classmethod
    def _check_store_url(cls, value: str) -> str:
        try:
            parse_store_url(value)
        except StoreError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("kafka_extra")
    @classmethod
    def _check_extra_with_librdkafka(cls, value: dict[str, Any]) -> dict[str, Any]:
        from worker.ops.kafka_config_check import kafka_extra_problem

        problem = kafka_extra_problem(value)
        if problem is not None:
            raise ValueError(problem)
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
    return {key: REDACTED if is_secret_key(key) else value for key, value in values.items()}

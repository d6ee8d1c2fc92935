"""Apache Kafka 4 for the integration suite, without Docker (DESIGN.md §2).

`make test-kafka` sets `EW_TEST_BROKER=apache-kafka`; the session's
`kafka_bootstrap` fixture then runs one `ApacheKafkaBroker` instead of tansu.

* `ensure_jars` resolves `org.apache.kafka:kafka_2.13` (version pinned in
  `kafka/pom.xml` beside this file) with Maven from Maven Central and copies
  the runtime jars into a cache directory (`EW_TEST_KAFKA_CACHE`, default
  `~/.cache/events-worker/kafka-<version>`) that later runs reuse. Nothing is
  downloaded at run time beyond what Maven resolves there.
* `ApacheKafkaBroker` formats a single-node KRaft log directory (one process is
  broker and controller) in a directory of the caller, starts `kafka.Kafka`
  on free loopback ports with a bounded heap, waits until it answers
  metadata, stops it by PID and can start it again on the same log directory
  and ports (the broker-restart test).

Missing Java or Maven raises `KafkaToolMissing` (the suite fails, never skips).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient

#: `EW_TEST_BROKER=apache-kafka` selects this broker for the integration suite.
BROKER_ENV = "EW_TEST_BROKER"
APACHE_KAFKA = "apache-kafka"
#: Where the resolved jars are kept between runs (a directory per Kafka version below it).
CACHE_ENV = "EW_TEST_KAFKA_CACHE"
POM = Path(__file__).parent / "kafka" / "pom.xml"
#: The JVM's heap: small and bounded, the machine is shared.
HEAP = ("-Xms128m", "-Xmx768m")
_START_TIMEOUT_S = 90.0
_STOP_TIMEOUT_S = 30.0
_MAVEN_TIMEOUT_S = 600.0
_JAR = re.compile(r"^kafka_2\.13-(?P<version>\d+\.\d+\.\d+)\.jar$")

#: Broker settings for tests: one node, fast group joins (classic and KIP-848),
#: a cleaner that compacts within seconds; topics set their own compaction knobs.
TEST_SETTINGS: Mapping[str, str] = {
    "num.partitions": "1",
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "2",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    # KIP-848 groups: the broker owns session and heartbeat timing.
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.min.session.timeout.ms": "6000",
    "group.consumer.heartbeat.interval.ms": "500",
    "group.consumer.min.heartbeat.interval.ms": "500",
    "log.cleaner.backoff.ms": "500",
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": "4194304",
    "log.retention.check.interval.ms": "1000",
    "log.segment.delete.delay.ms": "1000",
}


class KafkaToolMissing(RuntimeError):
    """Java or Maven is not installed: the Apache Kafka suite cannot run here."""


def pinned_version(pom: Path = POM) -> str:
    """The `kafka.version` property of `pom`."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if match is None:
        raise ValueError(f"{pom}: no <kafka.version> property")
    return match.group(1).strip()


def cache_dir(version: str) -> Path:
    """The directory holding the jars of Kafka `version` (see the module docstring)."""
    root = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "events-worker")
    return Path(root) / f"kafka-{version}"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise KafkaToolMissing(
            f"{tool} not found on PATH: `make test-kafka` needs Java 17+ and Maven "
            "to assemble Apache Kafka from Maven Central "
            "(apt-get install openjdk-17-jre-headless maven)"
        )
    return path


def ensure_jars(pom: Path = POM) -> Path:
    """The directory of Kafka's runtime jars, resolved by Maven on first use.

    Idempotent and safe across runs: jars are copied into a temporary
    directory that is renamed into place only when Maven succeeded. Raises
    `KafkaToolMissing` without Java or Maven, `RuntimeError` when Maven fails.
    """
    _require("java")
    lib = cache_dir(pinned_version(pom)) / "lib"
    if any(_JAR.match(p.name) for p in lib.glob("kafka_2.13-*.jar")):
        return lib
    mvn = _require("mvn")
    staging = lib.with_name(f"lib.{uuid.uuid4().hex[:8]}")
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(
            f"Maven could not assemble Apache Kafka from {pom}:\n{result.stdout[-3000:]}"
            f"{result.stderr[-2000:]}"
        )
    try:
        staging.rename(lib)
    except OSError:  # another run got there first
        shutil.rmtree(staging, ignore_errors=True)
    return lib


def jar_version(lib: Path) -> str:
    """The Kafka version of the `kafka_2.13-<version>.jar` in `lib` (what actually runs)."""
    for jar in lib.glob("kafka_2.13-*.jar"):
        match = _JAR.match(jar.name)
        if match:
            return match.group("version")
    raise FileNotFoundError(f"no kafka_2.13 jar in {lib}")


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


class ApacheKafkaBroker:
    """One single-node KRaft Apache Kafka process (broker + controller) under `root`.

    `start` formats `root/log` on first use, starts the JVM and blocks until
    the broker answers a metadata request (raises `RuntimeError` with the tail
    of `root/broker.log` when it exits or does not answer in time). `stop`
    sends SIGTERM (a clean shutdown) and waits; `kill` sends SIGKILL. Both are
    idempotent. Ports are chosen once, so a restarted broker keeps its
    bootstrap address.
    """

    def __init__(
        self,
        root: Path,
        *,
        lib: Path | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.lib = lib if lib is not None else ensure_jars()
        self.version = jar_version(self.lib)
        self.port = free_port()
        self.controller_port = free_port()
        self._settings = {**TEST_SETTINGS, **(settings or {})}
        self._process: subprocess.Popen[bytes] | None = None
        self._java = _require("java")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "broker.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _properties(self) -> Path:
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.root / "log"),
            **self._settings,
        }
        path = self.root / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
        (self.root / "log4j2.properties").write_text(_LOG4J2.format(path=self.log_path))
        return path

    def _java_command(self, main: str, *args: str) -> list[str]:
        return [
            self._java, *HEAP, "-XX:+UseSerialGC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            "-cp", f"{self.lib}/*", main, *args,
        ]  # fmt: skip

    def _format(self, properties: Path) -> None:
        if (self.root / "log" / "meta.properties").exists():
            return
        cluster_id = "ewtest" + uuid.uuid4().hex[:16]  # 22 characters, like a random Uuid
        result = subprocess.run(
            self._java_command(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)
            ),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"formatting the KRaft log directory failed:\n{result.stdout}")

    def start(self) -> None:
        """Start the broker (formatting its log directory the first time); blocks until ready."""
        if self._process is not None and self._process.poll() is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        properties = self._properties()
        self._format(properties)
        with (self.root / "stdout.log").open("ab") as out:
            self._process = subprocess.Popen(
                self._java_command("kafka.Kafka", str(properties)),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"Apache Kafka exited while starting:\n{self._tail()}")
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception:  # not listening yet
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(
            f"Apache Kafka did not answer metadata within {_START_TIMEOUT_S}s:\n{self._tail()}"
        )

    def _tail(self) -> str:
        text = ""
        for path in (self.root / "stdout.log", self.log_path):
            if path.exists():
                text += path.read_text(errors="replace")[-2500:]
        return text

    def stop(self) -> None:
        """Clean shutdown (SIGTERM), waiting for the process; SIGKILL if it hangs."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the broker process (SIGKILL) and wait for it."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT_S)

    def restart(self) -> None:
        """Stop, then start again on the same log directory and ports."""
        self.stop()
        self.start()

    def __enter__(self) -> ApacheKafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def apache_kafka_selected() -> bool:
    """Whether this run tests on Apache Kafka (`EW_TEST_BROKER=apache-kafka`)."""
    return os.environ.get(BROKER_ENV, "").strip() == APACHE_KAFKA

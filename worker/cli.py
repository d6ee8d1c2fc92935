"""The command line (DESIGN.md §9): a public contract. Thin: parse, then call in.

Flags win over ``EW_*`` environment variables. User errors print one line to
stderr and exit 2; nothing prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from worker import __version__
from worker.ops.settings import WorkerSettings
from worker.ops.starting import StoppedWhileStarting, StopWhileStarting

EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace, WorkerSettings], int]


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="events-worker",
        description="Kafka stream-processing worker for usage-based billing.",
    )
    parser.add_argument("--version", action="version", version=f"events-worker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="create or upgrade the ClickHouse schema")
    _store(migrate)
    migrate.add_argument(
        "--cluster",
        metavar="NAME",
        help="lay the schema out on this cluster: ON CLUSTER DDL, Replicated tables "
        "behind Distributed ones (default: EW_CLICKHOUSE_CLUSTER, else one server)",
    )
    migrate.add_argument(
        "--dry-run",
        action="store_true",
        help="print the DDL a new database would get, connect to nothing",
    )
    migrate.set_defaults(handler=_migrate)

    run = commands.add_parser("run", help="run a consumer")
    consumers = run.add_subparsers(dest="consumer", required=True, metavar="CONSUMER")
    usage = consumers.add_parser("usage", help="price usage events from the events topic")
    _bootstrap(usage)
    _store(usage)
    usage.add_argument("--catalog", metavar="FILE", help="catalog JSON file (else the topic)")
    _idle(
        usage,
        "exit 0 once it owned partitions, caught up, committed and was idle this long; "
        "exit 3 if it never received a partition, 2 if the catalog stayed empty",
    )
    usage.set_defaults(handler=_stoppable_start(_run_usage))
    reprocess = consumers.add_parser("reprocess", help="serve reprocess requests")
    _bootstrap(reprocess)
    _store(reprocess)
    _idle(reprocess)
    reprocess.set_defaults(handler=_stoppable_start(_run_reprocess))

    produce = commands.add_parser("produce", help="produce events from a JSONL file")
    produce.add_argument("file", metavar="FILE.jsonl")
    _bootstrap(produce)
    produce.add_argument("--topic", default=None, help="topic (default: events)")
    produce.add_argument(
        "--strict",
        action="store_true",
        help="produce nothing if any line cannot be keyed (default: send such lines "
        "without a key; the worker dead-letters them)",
    )
    produce.set_defaults(handler=_produce)

    catalog = commands.add_parser("catalog", help="catalog operations")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    publish = catalog_commands.add_parser("publish", help="publish a catalog file to the topic")
    publish.add_argument("file", metavar="FILE")
    _bootstrap(publish)
    publish.set_defaults(handler=_catalog_publish)
    check = catalog_commands.add_parser(
        "check", help="validate a catalog file as the worker does (exit 0 valid, 2 invalid)"
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=_catalog_check)

    reprocess_cmd = commands.add_parser("reprocess", help="reprocess requests")
    reprocess_commands = reprocess_cmd.add_subparsers(dest="reprocess_command", required=True)
    request = reprocess_commands.add_parser("request", help="request a reprocess of a range")
    _scope(request)
    request.add_argument("--start", required=True, metavar="ISO")
    request.add_argument("--end", required=True, metavar="ISO")
    request.add_argument("--external-customer-id")
    request.add_argument("--event-name")
    request.add_argument(
        "--batch-size", type=int, metavar="N", help="events per page (1..10000, default 1000)"
    )
    request.add_argument("--request-id", metavar="ID", help="request id (default: a new uuid4)")
    _bootstrap(request)
    request.set_defaults(handler=_reprocess_request)
    status = reprocess_commands.add_parser(
        "status", help="progress of a reprocess request of one tenant and environment"
    )
    status.add_argument("request_id", metavar="REQUEST_ID")
    _scope(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    _store(status)
    status.set_defaults(handler=_reprocess_status)

    query = commands.add_parser("query", help="read priced usage")
    query_commands = query.add_subparsers(dest="query_command", required=True)
    line_items = query_commands.add_parser("line-items", help="totals per line item and period")
    _scope(line_items)
    line_items.add_argument("--customer-id")
    line_items.add_argument("--external-customer-id", help="the customer's external id")
    line_items.add_argument("--subscription-id")
    _json_lines(line_items)
    _store(line_items)
    line_items.set_defaults(handler=_query_line_items)

    broker = commands.add_parser(
        "broker", help="run the local tansu broker in the foreground (local runs only)"
    )
    broker.add_argument(
        "--port",
        type=int,
        metavar="N",
        help="port on 127.0.0.1 (default: the port of EW_KAFKA_BOOTSTRAP, 9092)",
    )
    broker.set_defaults(handler=_broker)

    unprocessed = query_commands.add_parser(
        "unprocessed", help="raw events stored without processed rows (what reprocess re-drives)"
    )
    _scope(unprocessed)
    unprocessed.add_argument("--start", metavar="ISO", help="from this time (default: all)")
    unprocessed.add_argument("--end", metavar="ISO", help="before this time (default: all)")
    unprocessed.add_argument("--external-customer-id")
    unprocessed.add_argument("--event-name")
    unprocessed.add_argument(
        "--catalog", metavar="FILE", help="name each event's reason under this catalog"
    )
    unprocessed.add_argument(
        "--limit", type=int, default=100, metavar="N", help="at most N events (default 100)"
    )
    _json_lines(unprocessed)
    _store(unprocessed)
    unprocessed.set_defaults(handler=_query_unprocessed)

    dlq = commands.add_parser("dlq", help="dead letters: list them, re-drive some")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_commands.add_parser("list", help="every dead letter with its reason")
    dlq_list.add_argument("--reason", help="only dead letters with this reason")
    _json_lines(dlq_list)
    _bootstrap(dlq_list)
    dlq_list.set_defaults(handler=_dlq_list)
    dlq_redrive = dlq_commands.add_parser(
        "redrive", help="re-publish selected dead letters to their source topic"
    )
    dlq_redrive.add_argument(
        "--at", action="append", default=[], metavar="P:O", help="DLQ partition:offset (repeat)"
    )
    dlq_redrive.add_argument("--reason", help="every dead letter with this reason")
    dlq_redrive.add_argument("--all", action="store_true", help="every dead letter")
    _bootstrap(dlq_redrive)
    dlq_redrive.set_defaults(handler=_dlq_redrive)

    demo = commands.add_parser(
        "demo", help="run the pipeline on a local broker and embedded ClickHouse, print invoices"
    )
    demo.set_defaults(handler=_demo)
    bench = commands.add_parser("bench", help="run the benchmarks and print figures")
    bench.add_argument("--events", type=int, default=1_000_000)
    bench.add_argument("--customers", type=int, default=10_000)
    bench.add_argument("--pipeline-events", type=int, default=1_000_000)
    bench.set_defaults(handler=_bench)
    return parser


def _bootstrap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", metavar="B", help="Kafka bootstrap servers")


def _store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="URL", help="chdb:///dir or clickhouse://...")


def _scope(parser: argparse.ArgumentParser) -> None:
    """The tenant and environment every read and request is scoped by."""
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--environment", required=True)


def _json_lines(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def _seconds(text: str) -> float:
    """argparse type: a finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _idle(
    parser: argparse.ArgumentParser,
    help: str = "exit 0 once caught up, committed and idle this long",
) -> None:
    parser.add_argument("--exit-when-idle", type=_seconds, metavar="SECONDS", help=help)


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turn store failures into one-line user errors (exit 2, no traceback)."""
    from worker.store.errors import StoreError

    try:
        yield
    except StoreError as exc:
        raise UserError(str(exc)) from None


def _migrate(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from worker.store.connect import open_gateway
    from worker.store.schema import LATEST_VERSION, migrate, migration_sql
    from worker.store.url import parse_store_url

    cluster = settings.cluster_layout
    with _store_errors():
        if args.dry_run:
            database = parse_store_url(settings.store_url).database
            where = f"cluster {cluster.name}" if cluster is not None else "one server"
            print(f"-- schema version {LATEST_VERSION} of database {database}, {where}\n")
            for statement in migration_sql(database, cluster):
                print(f"{statement.strip()};\n")
            return 0
        gateway = open_gateway(settings.store_url)
        try:
            applied = migrate(gateway, cluster=cluster)
        finally:
            gateway.close()
    done = ", ".join(str(version) for version in applied) if applied else "nothing (up to date)"
    layout = f" on cluster {cluster.name}" if cluster is not None else ""
    print(
        f"schema of {gateway.url} (database {gateway.database}){layout} at version "
        f"{LATEST_VERSION}; applied: {done}"
    )
    return 0


_LINE_ITEM_COLUMNS = (
    ("subscription_id", "subscription"),
    ("sub_line_item_id", "line item"),
    ("period_id", "period start (UTC)"),
    ("price_id", "price"),
    ("currency", "cur"),
    ("qty_total", "quantity"),
    ("qty_free_applied", "free"),
    ("qty_billable", "billable"),
    ("cost", "cost"),
    ("amount", "amount"),
    ("event_count", "events"),
)


def _query_line_items(args: argparse.Namespace, settings: WorkerSettings) -> int:
    import orjson

    from worker.store.connect import open_gateway
    from worker.store.processed import line_item_totals
    from worker.store.schema import require_schema

    with _store_errors():
        gateway = open_gateway(settings.store_url, create=False)
        try:
            require_schema(gateway)
            totals = line_item_totals(
                gateway,
                args.tenant,
                args.environment,
                customer_id=args.customer_id,
                subscription_id=args.subscription_id,
                external_customer_id=args.external_customer_id,
            )
        finally:
            gateway.close()
    objects = [total.to_json() for total in totals]
    if args.json:
        for obj in objects:
            sys.stdout.write(orjson.dumps(obj).decode() + "\n")
        return 0
    table = [[title for _, title in _LINE_ITEM_COLUMNS]]
    for obj in objects:
        shown = {**obj, "period_id": _period_text(int(str(obj["period_id"])))}
        table.append([str(shown[key]) for key, _ in _LINE_ITEM_COLUMNS])
    widths = [max(len(row[i]) for row in table) for i in range(len(_LINE_ITEM_COLUMNS))]
    for row in table:
        padded = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(padded).rstrip())
    if not objects:
        print("(no priced usage)")
    return 0


def _query_unprocessed(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from worker.domain.catalog import CatalogError, load_catalog_file
    from worker.domain.catalog_index import CatalogIndex
    from worker.query_unprocessed import EARLIEST, LATEST, print_unprocessed, unprocessed_events
    from worker.store.connect import open_gateway
    from worker.store.params import FindUnprocessedEventsParams
    from worker.store.schema import require_schema

    if not 1 <= args.limit <= 100_000:
        raise UserError(f"--limit: {args.limit} is not in 1..100000")
    try:
        index = CatalogIndex(load_catalog_file(args.catalog)) if args.catalog else None
        params = FindUnprocessedEventsParams(
            tenant_id=args.tenant,
            environment_id=args.environment,
            start_time=_request_time("--start", args.start) if args.start else EARLIEST,
            end_time=_request_time("--end", args.end) if args.end else LATEST,
            external_customer_id=args.external_customer_id or "",
            event_name=args.event_name or "",
        )
        with _store_errors():
            gateway = open_gateway(settings.store_url, create=False)
            try:
                require_schema(gateway)
                events = unprocessed_events(gateway, params, args.limit)
            finally:
                gateway.close()
    except (CatalogError, ValueError) as exc:
        raise UserError(str(exc)) from None
    print_unprocessed(events, index, sys.stdout, as_json=args.json)
    return 0


def _period_text(period_id: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(period_id / 1000, UTC).isoformat(timespec="milliseconds")


#: Exit status when the broker did not acknowledge everything (not a usage error).
EXIT_DELIVERY_FAILED = 1


#: How many unkeyable lines `produce` lists before summarising the rest.
def _produce(args: argparse.Namespace, settings: WorkerSettings) -> int:
    """Produce a JSONL file keyed; exit 1 if any message failed.

    A line that cannot be keyed is reported and sent without a key (the worker
    dead-letters it with its reason); with ``--strict`` the file is checked
    first and such a line is a usage error (exit 2): nothing is produced. See
    `worker.stream.producer`.
    """
    settings = _quiet_kafka(settings)
    from worker.stream.producer import check_file, produce_file
    from worker.stream.topics import TopicSetupError, ensure_topics

    topic = args.topic or settings.events_topic
    try:
        if args.strict:
            good, problems = check_file(args.file)
        else:
            with open(args.file, "rb"):  # readable, before touching the broker
                pass
    except OSError as exc:
        raise UserError(f"cannot read {args.file}: {exc.strerror}") from None
    if args.strict and problems:
        _report_line_problems(args.file, problems, len(problems), outcome="")
        raise UserError(
            f"{args.file}: {len(problems)} of {len(problems) + good} lines cannot be keyed "
            "(need a JSON object with string tenant_id and external_customer_id or "
            "customer_id); nothing produced"
        )
    try:
        ensure_topics(settings, {topic: settings.topic_partitions})
        result = produce_file(settings, args.file, topic)
    except TopicSetupError as exc:
        print(f"events-worker: {exc}", file=sys.stderr)
        return EXIT_DELIVERY_FAILED
    except OSError as exc:
        raise UserError(f"cannot read {args.file}: {exc.strerror}") from None
    _report_line_problems(
        args.file,
        result.problems,
        result.unkeyed,
        outcome=": sent without a key, the worker will dead-letter it",
    )
    for error in result.errors:
        print(f"events-worker: delivery failed: {error}", file=sys.stderr)
    print(result.summary())
    return EXIT_DELIVERY_FAILED if result.failed else 0


def _quiet_kafka(settings: WorkerSettings) -> WorkerSettings:
    """Short commands: librdkafka's connection noise becomes one line of ours (and one
    when the broker is back); the command gives up after its own bounded timeouts."""
    from worker.ops.kafka_reachability import for_command_line

    return for_command_line(settings)


def _report_line_problems(
    path: str, problems: Sequence[object], total: int, *, outcome: str
) -> None:
    """Name the first lines that cannot be keyed on stderr, then how many more there are."""
    from worker.stream.producer import REPORTED_PROBLEMS

    shown = problems[:REPORTED_PROBLEMS]
    for problem in shown:
        print(f"events-worker: {path}: {problem}{outcome}", file=sys.stderr)
    if total > len(shown):
        print(f"events-worker: {path}: ... and {total - len(shown)} more", file=sys.stderr)


def _catalog_publish(args: argparse.Namespace, settings: WorkerSettings) -> int:
    """Validate a catalog file strictly, then publish its entities as upserts."""
    settings = _quiet_kafka(settings)
    from worker.domain.catalog import CatalogError, load_catalog_file
    from worker.stream.catalog_source import CatalogPublisher, entity_messages
    from worker.stream.topics import TopicSetupError, ensure_topics

    try:
        documents = load_catalog_file(args.file)
        for _ in entity_messages(documents):  # keys must be well-formed before anything is sent
            pass
    except (CatalogError, ValueError) as exc:
        raise UserError(str(exc)) from None
    try:
        ensure_topics(settings, {settings.catalog_topic: settings.topic_partitions})
    except TopicSetupError as exc:
        print(f"events-worker: {exc}", file=sys.stderr)
        return EXIT_DELIVERY_FAILED
    publisher = CatalogPublisher(settings)
    publisher.upsert_documents(documents)
    result = publisher.flush(timeout_s=60.0)
    for error in result.errors:
        print(f"events-worker: delivery failed: {error}", file=sys.stderr)
    print(result.summary())
    return EXIT_DELIVERY_FAILED if result.failed else 0


def _catalog_check(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from worker.catalog_check import check_catalog_file
    from worker.domain.catalog import CatalogError

    try:
        check_catalog_file(args.file, settings, sys.stdout)
    except CatalogError as exc:
        raise UserError(str(exc)) from None
    return 0


def _run_consumer(
    settings: WorkerSettings,
    run: Callable[[Any, Any], Any],
    *,
    needs_catalog: bool,
    user_errors: tuple[type[Exception], ...],
) -> Any:
    """``run(metrics, health)`` with JSON logs (secrets scrubbed), a fresh
    :class:`~worker.ops.metrics.Metrics` and :class:`~worker.ops.health.LoopHealth`
    served by a :class:`~worker.ops.health.HealthServer` on ``EW_HTTP_HOST``:``EW_HTTP_PORT``;
    returns what ``run`` returns. ``user_errors`` (and a bad log level or a port that
    cannot be served) become a :class:`UserError`."""
    from worker.ops.health import HealthServer, LoopHealth
    from worker.ops.logging import configure_logging, secret_values
    from worker.ops.metrics import Metrics

    try:
        configure_logging(settings.log_level, secrets=secret_values(settings))
    except ValueError as exc:
        raise UserError(f"invalid settings: EW_LOG_LEVEL: {exc}") from None
    metrics = Metrics()
    health = LoopHealth(settings.health_stall_seconds, metrics=metrics, needs_catalog=needs_catalog)
    try:
        server = HealthServer(metrics, health, port=settings.http_port, host=settings.http_host)
    except OSError as exc:
        raise UserError(
            f"cannot serve /metrics on {settings.http_host}:{settings.http_port} "
            f"(EW_HTTP_HOST, EW_HTTP_PORT): {exc.strerror or exc}"
        ) from None
    try:
        with server:
            return run(metrics, health)
    except user_errors as exc:
        raise UserError(str(exc)) from None


def _stoppable_start(run: Handler) -> Handler:
    """``run`` with SIGTERM/SIGINT during its start-up ending it with exit 0 and
    one line (:mod:`worker.ops.starting`); its loop then handles them itself."""

    def guarded(args: argparse.Namespace, settings: WorkerSettings) -> int:
        try:
            with StopWhileStarting():
                return run(args, settings)
        except StoppedWhileStarting as stopped:
            print(f"events-worker: {stopped}: nothing was consumed or committed", file=sys.stderr)
            return 0

    return guarded


#: Exit status of ``run usage --exit-when-idle`` when no partition was ever owned.
EXIT_NEVER_ASSIGNED = 3


def _run_usage(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from worker.domain.catalog import CatalogError
    from worker.store.errors import StoreError
    from worker.stream.consumer_support import NeverAssignedError
    from worker.stream.run_usage import run_usage
    from worker.stream.topics import TopicSetupError

    try:
        stats = _run_consumer(
            settings,
            lambda metrics, health: run_usage(
                settings,
                catalog_file=args.catalog,
                exit_when_idle_s=args.exit_when_idle,
                metrics=metrics,
                health=health,
            ),
            needs_catalog=True,
            user_errors=(CatalogError, StoreError, TopicSetupError),
        )
    except NeverAssignedError as exc:
        print(f"events-worker: {exc}", file=sys.stderr)
        return EXIT_NEVER_ASSIGNED
    print(
        f"usage consumer stopped: {stats.messages} messages, {stats.rows} rows, "
        f"{stats.dead_letters} dead letters in {stats.batches} batches",
        file=sys.stderr,
    )
    if stats.unpriced:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(stats.unpriced.items()))
        print(
            f"unpriced events (stored raw): {reasons}; once the catalog has them, price them "
            "with `events-worker reprocess request --tenant T --environment E --start ISO "
            "--end ISO` (list them: `events-worker query unprocessed`)",
            file=sys.stderr,
        )
    return 0


def _run_reprocess(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from worker.store.errors import StoreError
    from worker.stream.reprocess_run import run_reprocess
    from worker.stream.topics import TopicSetupError

    stats = _run_consumer(
        settings,
        lambda metrics, health: run_reprocess(
            settings,
            exit_when_idle_s=args.exit_when_idle,
            metrics=metrics.reprocess,
            health=health,
            on_reachability=metrics.kafka_reachability_changed,
        ),
        needs_catalog=False,
        user_errors=(StoreError, TopicSetupError),
    )
    print(
        f"reprocess consumer stopped: {stats.requests_completed} requests completed, "
        f"{stats.requests_ignored} ignored, {stats.requests_rejected} rejected, "
        f"{stats.requests_interrupted} interrupted; {stats.republished} events re-published",
        file=sys.stderr,
    )
    return 0


def _request_time(flag: str, text: str) -> Any:
    """An ISO 8601 / RFC 3339 time (naive = UTC) as an aware datetime, or a UserError."""
    from datetime import UTC, datetime

    from worker.domain.validation import InvalidEvent, parse_timestamp

    try:
        return parse_timestamp(text)
    except InvalidEvent:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"{flag}: not an ISO 8601 time: {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _reprocess_request(args: argparse.Namespace, settings: WorkerSettings) -> int:
    """Publish one reprocess request to the control topic; print its id."""
    settings = _quiet_kafka(settings)
    from worker.stream.delivery import DeliveryError
    from worker.stream.reprocess_request import ReprocessRequest, new_request_id, publish_request
    from worker.stream.topics import TopicSetupError, ensure_topics

    start = _request_time("--start", args.start)
    end = _request_time("--end", args.end)
    try:
        request = ReprocessRequest(
            request_id=args.request_id if args.request_id is not None else new_request_id(),
            tenant_id=args.tenant,
            environment_id=args.environment,
            start_time=start,
            end_time=end,
            external_customer_id=args.external_customer_id or "",
            event_name=(args.event_name or "").strip(),
            batch_size=args.batch_size,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        ensure_topics(settings, {settings.reprocess_topic: settings.topic_partitions})
        publish_request(settings, request)
    except (TopicSetupError, DeliveryError) as exc:
        print(f"events-worker: {exc}", file=sys.stderr)
        return EXIT_DELIVERY_FAILED
    print(request.request_id)
    return 0


#: Exit status of `reprocess status` for a request id the store has never seen.
EXIT_NOT_FOUND = 1


def _reprocess_status(args: argparse.Namespace, settings: WorkerSettings) -> int:
    """Print a request's saved progress (exit 1 when the store has none yet)."""
    import orjson

    from worker.store.connect import open_gateway
    from worker.store.reprocess_state import load_progress
    from worker.store.schema import require_schema

    with _store_errors():
        gateway = open_gateway(settings.store_url, create=False)
        try:
            require_schema(gateway)
            progress = load_progress(gateway, args.tenant, args.environment, args.request_id)
        finally:
            gateway.close()
    if progress is None:
        print(
            f"events-worker: reprocess request {args.request_id} of {args.tenant}/"
            f"{args.environment} not found (not picked up by a reprocess consumer yet, "
            "or unknown)",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    document = progress.to_json()
    if args.json:
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
        return 0
    for key in (
        "request_id",
        "state",
        "found",
        "republished",
        "pages",
        "cursor_timestamp",
        "cursor_id",
        "error",
        "created_at",
        "updated_at",
        "request",
    ):
        if document[key] is not None:
            print(f"{key}: {document[key]}")
    return 0


def _broker(args: argparse.Namespace, settings: WorkerSettings) -> int:
    _require_local_broker()
    from worker.broker_command import BrokerCommandError, default_port, run_broker

    port = args.port if args.port is not None else default_port(settings)
    if not 1 <= port <= 65_535:
        raise UserError(f"--port: {port} is not a TCP port (1..65535)")
    try:
        run_broker(port, sys.stdout)
    except BrokerCommandError as exc:
        raise UserError(str(exc)) from None
    return 0


def _dlq_list(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from worker.dlq_command import print_letters
    from worker.stream.dlq import HEADER_REASON
    from worker.stream.dlq_tools import DlqToolError, read_dead_letters

    settings = _quiet_kafka(settings)
    try:
        letters = read_dead_letters(settings)
    except DlqToolError as exc:
        print(f"events-worker: {exc}", file=sys.stderr)
        return EXIT_DELIVERY_FAILED
    if args.reason:
        letters = [letter for letter in letters if letter.header(HEADER_REASON) == args.reason]
    print_letters(letters, sys.stdout, as_json=args.json, topic=settings.dlq_topic)
    return 0


def _dlq_redrive(args: argparse.Namespace, settings: WorkerSettings) -> int:
    from worker.dlq_command import SelectionError, parse_positions, select
    from worker.stream.dlq_tools import DlqToolError, read_dead_letters, redrive

    try:
        positions = parse_positions(args.at)
        select([], positions=positions, reason=args.reason, everything=args.all)
    except SelectionError as exc:
        raise UserError(str(exc)) from None
    settings = _quiet_kafka(settings)
    try:
        chosen = select(
            read_dead_letters(settings),
            positions=positions,
            reason=args.reason,
            everything=args.all,
        )
        missing = positions - {(letter.partition, letter.offset) for letter in chosen}
        if missing:
            shown = ", ".join(f"{p}:{o}" for p, o in sorted(missing))
            raise UserError(f"--at: no dead letter at {shown} in {settings.dlq_topic}")
        sent = redrive(settings, chosen)
    except DlqToolError as exc:
        print(f"events-worker: {exc}", file=sys.stderr)
        return EXIT_DELIVERY_FAILED
    print(f"re-drove {sent} dead letters from {settings.dlq_topic}")
    return 0


def _require_local_broker() -> None:
    """``demo``, ``broker`` and ``bench`` start tansu, the optional ``local`` extra:
    without it, one line on what to install (exit 2) before anything starts."""
    from worker.dev.local_broker import missing_local_extra

    problem = missing_local_extra()
    if problem is not None:
        raise UserError(problem)


def _demo(args: argparse.Namespace, settings: WorkerSettings) -> int:
    _require_local_broker()
    from worker.demo import run_demo

    run_demo(sys.stdout)
    return 0


def _bench(args: argparse.Namespace, settings: WorkerSettings) -> int:
    _require_local_broker()
    from worker.benchmarks.child import scratch_root
    from worker.benchmarks.domain import print_domain_bench
    from worker.benchmarks.pipeline import print_pipeline_bench
    from worker.benchmarks.reprocess import print_reprocess_bench
    from worker.benchmarks.server import print_server_bench
    from worker.benchmarks.store import print_store_bench
    from worker.benchmarks.targets import print_targets

    # One scratch root, deleted after the last benchmark: see worker.benchmarks.child.
    with scratch_root():
        domain = print_domain_bench(events=args.events, customers=args.customers)
        pipeline = print_pipeline_bench(events=args.pipeline_events, customers=args.customers)
        print_store_bench()
        print_server_bench()
        print_reprocess_bench()
        print_targets(domain, pipeline)
    return 0


def settings_from(args: argparse.Namespace) -> WorkerSettings:
    """Environment settings with command-line flags applied on top."""
    overrides: dict[str, Any] = {}
    if getattr(args, "bootstrap", None):
        overrides["kafka_bootstrap"] = args.bootstrap
    if getattr(args, "store", None):
        overrides["store_url"] = args.store
    if getattr(args, "cluster", None):
        overrides["clickhouse_cluster"] = args.cluster
    try:
        return WorkerSettings(**overrides)
    except SettingsError as exc:
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"EW_{field.group(1).upper()}" if field else "an EW_* variable"
        raise UserError(f"invalid settings: {name} is not valid JSON") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{_setting_name(error['loc'], overrides)}: "
            f"{str(error['msg']).removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise UserError(f"invalid settings: {problems}") from None


#: Settings a command-line flag can set, and that flag.
_FLAGS = {
    "kafka_bootstrap": "--bootstrap",
    "store_url": "--store",
    "clickhouse_cluster": "--cluster",
}


def _setting_name(location: tuple[int | str, ...], overrides: dict[str, Any]) -> str:
    """The flag or ``EW_*`` variable the user typed a bad value into."""
    field = "_".join(str(part) for part in location)
    if field in overrides and field in _FLAGS:
        return _FLAGS[field]
    return f"EW_{field.upper()}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``events-worker`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        handler: Handler = args.handler
        return handler(args, settings)
    except UserError as exc:
        print(f"events-worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `| head`: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

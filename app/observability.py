"""Operations: JSON logs for our own loggers, and the Prometheus metrics.

Logs: every record of the `app`, `tasks` and `sequences` loggers is one JSON object per line, its
message a stable event name and its `extra=` fields as keys, plus the tenant inside a request and
the task inside a Celery task. Celery's and gunicorn's own lines are left as they are.

Metrics: counters live in the process that counts (events accepted in the web process, events
stored and tasks in the worker). With `PROMETHEUS_MULTIPROC_DIR` set, prometheus_client keeps them
in files in that folder, and a scrape of any web process adds up every process on the host;
without it each process reports its own. Gauges (queue depth, sends by status, due steps) are
read from the broker and the database at scrape time, so any web process answers them alike.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC
from datetime import datetime
from typing import IO
from typing import Any

import redis
from celery import current_task
from celery.signals import after_setup_logger
from celery.signals import after_task_publish
from celery.signals import task_postrun
from flask import Flask
from flask import Response
from flask import g
from flask import has_request_context
from flask import request
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_client import ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy import Executable
from sqlalchemy import text

from app.config import Settings
from app.db import READ_ONLY
from app.ingest_ledger import RedisLedger
from app.services import enrolments
from app.timeutil import isoformat
from app.timeutil import utcnow
from tasks import embedded_broker
from tasks.celery_app import Queue

log = logging.getLogger(__name__)

OUR_LOGGERS = ("app", "tasks", "sequences")
SEND_STATUSES = ("queued", "sending", "sent", "delivered", "bounced", "complained", "rejected",
                 "failed")
PROBE_TIMEOUT_S = 2.0
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# kombu's Redis transport keeps a queue's priorities 3, 6 and 9 in lists beside the plain one.
_REDIS_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")

# ---------------------------------------------------------------------------------------------
# Structured logs

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime",
                                                                    "taskName"}


_BASE_KEYS = frozenset({"time", "level", "logger", "event"})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event, context and `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": isoformat(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(), "logger": record.name,
            "event": record.getMessage()}
        entry.update(_context())
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                # `extra=` may name the tenant (it wins over the request's) but never hides the
                # four keys every line has: `extra={"event": ...}` becomes `extra_event`.
                entry[f"extra_{key}" if key in _BASE_KEYS else key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def _context() -> dict[str, Any]:
    """The tenant of the current request, or the Celery task being run."""
    context: dict[str, Any] = {}
    if has_request_context() and g.get("tenant_id"):
        context["tenant_id"] = g.tenant_id
    task = current_task._get_current_object()
    if task is not None and task.request.id:
        context.update(task=task.name, task_id=task.request.id)
    return context


class _JsonHandler(logging.StreamHandler[IO[str]]):
    """Our handler; a type of its own so a second `configure_logging` can find and replace it."""


class _NotOurs(logging.Filter):
    """Keep our loggers' records out of a handler (they already went out as JSON)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] not in OUR_LOGGERS


def configure_logging(level: str, stream: IO[str] | None = None) -> None:
    """Send our loggers' records, from `level` up, to `stream` (stderr) as JSON lines."""
    from flask.logging import default_handler

    handler = _JsonHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _JsonHandler)]:
            logger.removeHandler(old)
        # Flask logs through the logger named after the app's package (`app`): not in its format.
        logger.removeHandler(default_handler)
        logger.addHandler(handler)
        logger.setLevel(level)


def _quiet_root_handlers(logger: logging.Logger, **_: Any) -> None:
    # Celery's worker installs its own handlers on the root logger; our records still propagate
    # (pytest's log capture relies on it), so those handlers must skip them, or every line of
    # ours would be printed twice, once in Celery's format.
    for handler in logger.handlers:
        if not any(isinstance(f, _NotOurs) for f in handler.filters):
            handler.addFilter(_NotOurs())


# ---------------------------------------------------------------------------------------------
# Counters (registry=None: they join a fresh registry at each scrape, never the global one that
# Flower also exports from)

EVENTS_ACCEPTED = Counter("kraiter_events_accepted", "Events the API accepted (202) and put on "
                          "the ingest queue.", registry=None)
EVENTS_STORED = Counter("kraiter_events_stored", "Events the worker stored (duplicates of a "
                        "redelivered batch are not counted).", registry=None)
TASKS_FINISHED = Counter("kraiter_tasks_finished", "Celery tasks run by the worker, by task "
                         "name and final state.", ["task", "state"], registry=None)
HTTP_REQUESTS = Counter("kraiter_http_requests", "HTTP requests answered, by method, endpoint "
                        "and status.", ["method", "endpoint", "status"], registry=None)
HTTP_DURATION = Histogram("kraiter_http_request_duration_seconds", "Time to build the answer, by "
                          "endpoint.", ["endpoint"], registry=None)
_COUNTERS = (EVENTS_ACCEPTED, EVENTS_STORED, TASKS_FINISHED, HTTP_REQUESTS, HTTP_DURATION)


def _count_published(sender: str | None = None, body: Any = None, **_: Any) -> None:
    # Message protocol 2: body is (args, kwargs, embed); the ingest task's one argument is the
    # list of events. A 202 is answered only after this publish, so this counts accepted events.
    if sender == "events.ingest" and isinstance(body, list | tuple) and body and body[0]:
        EVENTS_ACCEPTED.inc(len(body[0][0]))


def _count_task(sender: Any = None, retval: Any = None, state: str | None = None,
                **_: Any) -> None:
    name = getattr(sender, "name", None) or "unknown"
    TASKS_FINISHED.labels(task=name, state=state or "UNKNOWN").inc()
    if name == "events.ingest" and state == "SUCCESS" and isinstance(retval, int):
        EVENTS_STORED.inc(retval)


def _endpoint_label() -> str:
    # The view's name (not the path): bounded, and the same under /api and at the root.
    endpoint = request.endpoint
    return endpoint.rsplit(".", 1)[-1] if endpoint else "unmatched"


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    endpoint = _endpoint_label()
    method = request.method if request.method in _HTTP_METHODS else "OTHER"
    HTTP_REQUESTS.labels(method=method, endpoint=endpoint, status=str(response.status_code)).inc()
    started = g.get("request_started")
    if started is not None:
        HTTP_DURATION.labels(endpoint=endpoint).observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Wire logging and metrics into the app and, for the worker, into Celery's signals."""
    configure_logging(app.config["SETTINGS"].log_level)
    # dispatch_uid: one receiver per process however many apps are built (tests build several).
    after_setup_logger.connect(_quiet_root_handlers, weak=False, dispatch_uid="kraiter-logs")
    after_task_publish.connect(_count_published, weak=False, dispatch_uid="kraiter-accepted")
    task_postrun.connect(_count_task, weak=False, dispatch_uid="kraiter-tasks")
    app.before_request(_start_timer)
    app.after_request(_count_request)


# ---------------------------------------------------------------------------------------------
# The broker and the database, probed with short timeouts (readiness and scrape-time gauges)


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT_S,
                                socket_connect_timeout=PROBE_TIMEOUT_S)


def _open_embedded_broker(settings: Settings) -> sqlite3.Connection | None:
    """The embedded broker's file, read-only; None if nothing was ever published to it."""
    path = embedded_broker.database_path(settings.broker_url)
    if not path.exists():
        return None
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_S)


def _read(engine: Engine, statement: str | Executable) -> list[Any]:
    """Rows of a read-only probe query, cut off after PROBE_TIMEOUT_S on PostgreSQL.

    On a read-only connection (`app.db.READ_ONLY`): on SQLite its transaction begins deferred,
    not IMMEDIATE, so a probe never waits behind the worker's write lock.
    """
    with engine.connect().execution_options(**{READ_ONLY: True}) as connection:
        if engine.dialect.name == "postgresql":
            # LOCAL: only for this transaction, which ends (rolled back) with the block.
            connection.exec_driver_sql(
                f"SET LOCAL statement_timeout = {int(PROBE_TIMEOUT_S * 1000)}")
        return list(connection.execute(text(statement) if isinstance(statement, str)
                                       else statement))


def ping_database(engine: Engine) -> None:
    """Raise unless the database answers `SELECT 1`."""
    _read(engine, "SELECT 1")


def ping_broker(settings: Settings) -> None:
    """Raise unless Redis answers PING, or the embedded broker's folder and file open."""
    if settings.redis_url is not None:
        client = _redis(settings.redis_url)
        try:
            client.ping()
        finally:
            client.close()
        return
    path = embedded_broker.database_path(settings.broker_url)
    if not path.parent.is_dir():
        raise FileNotFoundError("the embedded broker's folder does not exist")
    # Opening creates an empty file if none exists yet, which the broker fills on first use.
    with closing(sqlite3.connect(path, timeout=PROBE_TIMEOUT_S)) as connection:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()


def queue_depths(settings: Settings) -> tuple[dict[str, int], int]:
    """({queue: messages waiting}, messages taken by a worker but not yet acknowledged)."""
    queues = [queue.value for queue in Queue]
    if settings.redis_url is not None:
        client = _redis(settings.redis_url)
        try:
            with client.pipeline(transaction=False) as pipe:
                for name in queues:
                    for suffix in _REDIS_PRIORITY_SUFFIXES:
                        pipe.llen(name + suffix)
                pipe.hlen("unacked")
                lengths = pipe.execute()
        finally:
            client.close()
        step = len(_REDIS_PRIORITY_SUFFIXES)
        waiting = {name: sum(lengths[i * step:(i + 1) * step]) for i, name in enumerate(queues)}
        return waiting, int(lengths[-1])
    return _embedded_depths(settings, queues)


def _embedded_depths(settings: Settings, queues: list[str]) -> tuple[dict[str, int], int]:
    waiting = dict.fromkeys(queues, 0)
    connection = _open_embedded_broker(settings)
    if connection is None:
        return waiting, 0
    # A reservation older than the visibility timeout is abandoned: the message waits again.
    expired = time.time() - settings.broker_visibility_timeout_s
    try:
        rows = connection.execute(
            f"SELECT queue, reserved_at IS NOT NULL AND reserved_at > ?, count(*) "
            f"FROM {embedded_broker.TABLE} GROUP BY 1, 2", (expired,)).fetchall()
    except sqlite3.OperationalError:  # no table yet: the broker was never used
        rows = []
    finally:
        connection.close()
    unacked = 0
    for queue, reserved, count in rows:
        if reserved:
            unacked += count
        elif queue in waiting:
            waiting[queue] = count
    return waiting, unacked


def _sends_by_status(engine: Engine) -> dict[str, int]:
    counts = dict.fromkeys(SEND_STATUSES, 0)
    rows = _read(engine, "SELECT status, count(*) FROM sends GROUP BY status")
    counts.update({status: int(count) for status, count in rows})
    return counts


def _step_backlog(engine: Engine) -> tuple[int, float]:
    """(steps due but not run, seconds the oldest has waited past its time); steps of paused
    sequences are held on purpose and do not count."""
    now = utcnow()
    [(count, oldest)] = _read(engine, enrolments.step_backlog_query(now))
    return int(count), max(0.0, (now - oldest).total_seconds()) if oldest else 0.0


class _LiveCollector(Collector):
    """Gauges read at scrape time; a probe that fails reports `kraiter_probe_up` 0, not a 500."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        metrics: list[Metric] = []
        up = GaugeMetricFamily("kraiter_probe_up", "Whether the scrape could read the broker "
                               "and the database.", labels=["probe"])
        up.add_metric(["broker"], self._broker_metrics(metrics))
        up.add_metric(["database"], self._database_metrics(metrics))
        yield from metrics
        yield up

    def _broker_metrics(self, out: list[Metric]) -> float:
        depth = GaugeMetricFamily("kraiter_queue_depth", "Messages waiting in a broker queue.",
                                  labels=["queue"])
        unacked = GaugeMetricFamily("kraiter_queue_unacked", "Messages a worker holds but has "
                                    "not acknowledged yet (all queues).")
        try:
            waiting, held = queue_depths(self.settings)
        except Exception:
            log.warning("metrics_broker_probe_failed", exc_info=True)
            return 0.0
        for queue, count in waiting.items():
            depth.add_metric([queue], count)
        unacked.add_metric([], held)
        unstored = GaugeMetricFamily("kraiter_ingest_unstored_messages", "Ingest messages "
                                     "published and not stored yet (the ingest ledger; Redis).")
        unstored.add_metric([], self._unstored())
        out += [depth, unacked, unstored]
        return 1.0

    def _unstored(self) -> int:
        if self.settings.redis_url is None:
            return 0  # the embedded broker needs no ledger
        client = _redis(self.settings.redis_url)
        try:
            return RedisLedger(client).pending()
        finally:
            client.close()

    def _database_metrics(self, out: list[Metric]) -> float:
        sends = GaugeMetricFamily("kraiter_sends", "Sends by status, all tenants (`sending`: "
                                  "claimed by a worker, in the transport).", labels=["status"])
        due = GaugeMetricFamily("kraiter_steps_due", "Sequence steps due but not run yet.")
        lag = GaugeMetricFamily("kraiter_steps_oldest_lag_seconds", "How long the oldest due "
                                "step has waited past its time.")
        try:
            by_status = _sends_by_status(self.engine)
            steps_due, oldest_lag = _step_backlog(self.engine)
        except Exception:
            log.warning("metrics_database_probe_failed", exc_info=True)
            return 0.0
        for status, count in by_status.items():
            sends.add_metric([status], count)
        due.add_metric([], steps_due)
        lag.add_metric([], oldest_lag)
        out += [sends, due, lag]
        return 1.0


def multiprocess_dir() -> str | None:
    """The folder prometheus_client shares counters through, if this deployment set one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(settings: Settings, engine: Engine, accept: str | None) -> tuple[bytes, str]:
    """The scrape's body and content type (text format, or OpenMetrics if asked for)."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for counter in _COUNTERS:
            registry.register(counter)
        ProcessCollector(registry=registry)
    registry.register(_LiveCollector(settings, engine))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type

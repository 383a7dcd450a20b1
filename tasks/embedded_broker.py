"""Durable kombu transport on a SQLite file: Celery's broker in embedded mode.

Broker URL: ``kraiter-sqlite:///abs/path/to/broker.db`` (call :func:`register`
first so kombu knows the scheme).

Why not kombu's own ``sqlalchemy`` or ``filesystem`` transports: they delete or
hide a message as soon as it is fetched and only put unacked messages back on
a *graceful* shutdown, so a worker killed with SIGKILL (OOM killer, container
stop timeout, power cut) silently loses the tasks it held.

Here a message row stays in the table until it is acknowledged:

* fetching a row *reserves* it (``reserved_at``, ``reserved_by`` and a fresh
  ``delivery_tag``) inside ``BEGIN IMMEDIATE``, so two consumers in different
  processes never get the same row;
* ``basic_ack`` (and reject without requeue) deletes the row;
* reject-with-requeue and kombu's graceful restore clear the reservation, so
  the message is visible again at once, at its original FIFO position;
* a reservation older than ``visibility_timeout`` seconds (transport option,
  default 900) is treated as abandoned and the row is handed out again, which
  is how a SIGKILLed worker's messages come back after a restart;
* while a consumer keeps draining events it renews the reservations of the
  messages it still holds (``reserved_at`` is a lease, not a fetch time), so a
  long task or an ETA task held in worker memory is never handed to a second
  worker just because it outlived the visibility timeout.

The module deliberately imports nothing from ``app/``: it is loaded by kombu in
every process that talks to the broker (web, worker, pool children, beat).
"""

# kombu is untyped; calling into it from typed methods is the whole point here.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import virtual

#: URL scheme, as in ``kraiter-sqlite:///var/lib/kraiter/broker.db``.
SCHEME = "kraiter-sqlite"

#: Import path kombu resolves the scheme to.
TRANSPORT_PATH = "tasks.embedded_broker:Transport"

#: Seconds after which a reservation that was not renewed is considered
#: abandoned (its holder died) and the message is delivered again.
DEFAULT_VISIBILITY_TIMEOUT = 900.0

#: How long a connection waits for another process's write lock.  Writes are
#: single-row and short, so hitting this means the file is wedged, and the
#: resulting OperationalError is reported to kombu as a connection error.
BUSY_TIMEOUT_SECONDS = 30.0

#: A holder renews its leases this many times per visibility timeout, so one
#: slow poll never lets a live reservation expire.
LEASE_RENEWALS_PER_TIMEOUT = 4

TABLE = "kraiter_broker_message"

_SCHEMA = (
    # AUTOINCREMENT (not plain rowid) so an id is never reused: acks delete by
    # id, and a stale ack must never hit a newer message that got the same id.
    f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        reserved_at REAL,
        reserved_by TEXT,
        delivery_tag TEXT,
        deliveries INTEGER NOT NULL DEFAULT 0
    )
    """,
    # Serves the FIFO fetch (queue = ? ORDER BY id), size, purge and delete.
    f"CREATE INDEX IF NOT EXISTS ix_{TABLE}_queue_id ON {TABLE} (queue, id)",
)

#: Rows a consumer may take: never reserved, or reserved by a holder whose
#: lease ran out.  The one parameter is the lease cut-off (now - timeout).
_READY = "(reserved_at IS NULL OR reserved_at <= ?)"


def register() -> None:
    """Make the ``kraiter-sqlite`` URL scheme known to kombu (idempotent)."""
    TRANSPORT_ALIASES[SCHEME] = TRANSPORT_PATH


def broker_url(path: str | os.PathLike[str]) -> str:
    """Return the broker URL for the SQLite file at ``path`` (made absolute)."""
    return f"{SCHEME}://{Path(path).resolve()}"


def database_path(url: str) -> Path:
    """Return the SQLite file named by a ``kraiter-sqlite://`` URL.

    A bare absolute path is accepted too (``Connection(path, transport=...)``).
    Relative paths are refused: the web process, the worker and beat usually
    run with different working directories and must agree on one file.
    """
    prefix = f"{SCHEME}://"
    raw = url[len(prefix) :] if url.startswith(prefix) else url
    if not raw.startswith("/"):
        raise ValueError(f"{SCHEME} broker URL needs an absolute path, got {url!r}")
    return Path(raw)


def _holder_name() -> str:
    """Identify the reserving process in the table, for operators reading it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _new_delivery_tag(row_id: int) -> str:
    """Make a delivery tag unique per delivery that still names its row.

    kombu's tags are assigned at publish time and repeat on redelivery (and
    across queues for one published message); ours changes on every fetch so a
    stale holder can be told apart from the current one.
    """
    return f"{row_id}.{uuid.uuid4().hex}"


def _row_id(delivery_tag: str) -> int:
    """Return the row id encoded in a tag made by :func:`_new_delivery_tag`."""
    return int(str(delivery_tag).split(".", 1)[0])


def _connect(path: Path) -> sqlite3.Connection:
    """Open the broker file, creating its directory and table on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: the sqlite3 module must not open transactions
    # behind our back; every write below runs in an explicit BEGIN IMMEDIATE.
    # check_same_thread=False: acks may come from another thread than the one
    # that fetched; _Store serialises access with its own lock.
    conn = sqlite3.connect(
        str(path),
        timeout=BUSY_TIMEOUT_SECONDS,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        # WAL lets publishers and consumers in other processes read while one
        # of them writes; the setting is stored in the file.
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: an acknowledged publish survives a power cut, not only a crash.
        conn.execute("PRAGMA synchronous = FULL")
        with _immediate(conn):
            for statement in _SCHEMA:
                conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run a block in a write transaction taken up front.

    ``BEGIN IMMEDIATE`` grabs the write lock before reading, so the
    select-then-update in a fetch cannot interleave with another process's
    fetch, and lock waits go through the busy timeout instead of failing with
    SQLITE_BUSY_SNAPSHOT halfway through a deferred transaction.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        # SQLite may already have rolled back on some errors (e.g. disk full).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


#: Connections inherited across fork().  A forked child must neither use nor
#: close its parent's SQLite handle (closing can disturb the parent's locks),
#: so they are parked here for the life of the child instead of being GC'd.
_INHERITED: list[sqlite3.Connection] = []


class _Store:
    """The SQL behind a channel: one lazily opened connection per process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Yield the connection inside a write transaction, thread-safely."""
        with self._lock:
            conn = self._connection()
            with _immediate(conn):
                yield conn

    def _connection(self) -> sqlite3.Connection:
        """Return this process's connection, reopening it after a fork."""
        if self._conn is not None and self._pid != os.getpid():
            _INHERITED.append(self._conn)
            self._conn = None
        if self._conn is None:
            self._conn = _connect(self.path)
            self._pid = os.getpid()
        return self._conn

    def open(self) -> None:
        """Open now, so a bad path or a locked file fails at connect time."""
        with self._lock:
            self._connection()

    def close(self) -> None:
        """Close this process's connection (reopened lazily if used again)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def put(self, queue: str, payload: str) -> None:
        """Append a message to ``queue``."""
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO {TABLE} (queue, payload, created_at) VALUES (?, ?, ?)",
                (queue, payload, time.time()),
            )

    def reserve(self, queue: str, visibility_timeout: float) -> tuple[str, str, int] | None:
        """Reserve the oldest ready message of ``queue``.

        Returns ``(payload, delivery_tag, deliveries)`` or None if none is ready.
        """
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                f"SELECT id, payload, deliveries FROM {TABLE} "
                f"WHERE queue = ? AND {_READY} ORDER BY id LIMIT 1",
                (queue, now - visibility_timeout),
            ).fetchone()
            if row is None:
                return None
            row_id, payload, deliveries = row
            tag = _new_delivery_tag(row_id)
            conn.execute(
                f"UPDATE {TABLE} SET reserved_at = ?, reserved_by = ?, delivery_tag = ?, "
                "deliveries = deliveries + 1 WHERE id = ?",
                (now, _holder_name(), tag, row_id),
            )
        return payload, tag, deliveries + 1

    def ack(self, delivery_tag: str) -> None:
        """Delete an acknowledged message.

        By id alone, even if a newer delivery of the row exists: the message
        has been processed, so handing it out again would only duplicate work.
        """
        with self._write() as conn:
            conn.execute(f"DELETE FROM {TABLE} WHERE id = ?", (_row_id(delivery_tag),))

    def release(self, delivery_tags: Sequence[str]) -> None:
        """Make reserved messages visible again at once.

        Only while the reservation is still ours: if the lease had expired and
        another consumer took the row, releasing it would deliver it a third
        time while that consumer is still working on it.
        """
        if not delivery_tags:
            return
        with self._write() as conn:
            conn.executemany(
                f"UPDATE {TABLE} SET reserved_at = NULL, reserved_by = NULL, "
                "delivery_tag = NULL WHERE id = ? AND delivery_tag = ?",
                [(_row_id(tag), tag) for tag in delivery_tags],
            )

    def renew(self, delivery_tags: Sequence[str]) -> None:
        """Extend the leases of messages this consumer still holds."""
        if not delivery_tags:
            return
        now = time.time()
        with self._write() as conn:
            conn.executemany(
                f"UPDATE {TABLE} SET reserved_at = ? WHERE id = ? AND delivery_tag = ?",
                [(now, _row_id(tag), tag) for tag in delivery_tags],
            )

    def size(self, queue: str, visibility_timeout: float) -> int:
        """Count the messages of ``queue`` a consumer could take right now."""
        with self._lock:
            row = (
                self._connection()
                .execute(
                    f"SELECT COUNT(*) FROM {TABLE} WHERE queue = ? AND {_READY}",
                    (queue, time.time() - visibility_timeout),
                )
                .fetchone()
            )
        return int(row[0])

    def purge(self, queue: str, visibility_timeout: float) -> int:
        """Delete the ready messages of ``queue``; return how many.

        Reserved messages are left alone, as AMQP's queue.purge does: they
        belong to a consumer that will ack or return them.
        """
        with self._write() as conn:
            cursor = conn.execute(
                f"DELETE FROM {TABLE} WHERE queue = ? AND {_READY}",
                (queue, time.time() - visibility_timeout),
            )
        return cursor.rowcount

    def delete(self, queue: str) -> None:
        """Drop every message of ``queue``, reserved or not (the queue is gone)."""
        with self._write() as conn:
            conn.execute(f"DELETE FROM {TABLE} WHERE queue = ?", (queue,))


class SQLiteQoS(virtual.QoS):
    """Ack emulation backed by the table, modelled on the Redis transport's.

    The base class keeps unacked messages in memory only; here every state
    change is written through so it survives the process.
    """

    channel: Channel

    def __init__(self, channel: Channel, prefetch_count: int = 0) -> None:
        super().__init__(channel, prefetch_count)
        # A forked pool child inherits this object; its finalizer must not
        # release the parent's reservations while the parent still works on them.
        self._owner_pid = os.getpid()

    def ack(self, delivery_tag: str) -> None:
        """Delete the message, then forget it."""
        self.channel.store.ack(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Make the message visible again (requeue) or drop it, then forget it."""
        if requeue:
            self.channel.store.release([delivery_tag])
        else:
            self.channel.store.ack(delivery_tag)
        # The base reject() would re-publish a copy; marking it acked only
        # removes it from the in-memory state, like the Redis transport does.
        super().ack(delivery_tag)

    def restore_unacked(self) -> list[tuple[BaseException, Any]]:
        """Return every message still held to the queue (graceful shutdown)."""
        if os.getpid() != self._owner_pid:
            return []
        self._flush()
        held = list(self._delivered.items())
        self._delivered.clear()
        try:
            self.channel.store.release([tag for tag, _ in held])
        except Exception as exc:
            # Not fatal: the rows are still in the table and come back once
            # the visibility timeout has passed.
            return [(exc, message) for _, message in held]
        return []

    def held_tags(self) -> list[str]:
        """Delivery tags fetched by this channel and not yet acked or rejected."""
        dirty = self._dirty
        return [tag for tag in list(self._delivered) if tag not in dirty]


class Channel(virtual.Channel):
    """A virtual channel whose queues live in one SQLite table."""

    QoS = SQLiteQoS
    _qos: SQLiteQoS | None

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        conninfo: Any = connection.client
        # Resolved now: kombu detaches channel.connection before close() ends,
        # and the restore on close still needs the file.  Opened before the
        # base class registers the channel, so a failure leaves nothing behind.
        self.store = _Store(database_path(conninfo.hostname or ""))
        self.store.open()
        super().__init__(connection, **kwargs)
        #: Seconds before an unrenewed reservation is handed out again.  Celery
        #: passes transport options through untouched, so "30" is accepted too.
        self.visibility_timeout = float(
            conninfo.transport_options.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT)
        )
        self._renew_every = self.visibility_timeout / LEASE_RENEWALS_PER_TIMEOUT
        self._next_renewal = 0.0

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """Store a published message (priority is not supported: plain FIFO)."""
        self.store.put(queue, json.dumps(message))

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """Reserve the next message of ``queue`` or raise :class:`queue.Empty`."""
        row = self.store.reserve(queue, self.visibility_timeout)
        if row is None:
            raise Empty()
        payload, delivery_tag, deliveries = row
        message: dict[str, Any] = json.loads(payload)
        properties = message.setdefault("properties", {})
        properties["delivery_tag"] = delivery_tag
        if deliveries > 1:
            # kombu's Message reads the flag from delivery_info; Celery uses it
            # (e.g. worker_deduplicate_successful_tasks).
            message["redelivered"] = True
            properties.setdefault("delivery_info", {})["redelivered"] = True
        return message

    def _size(self, queue: str) -> int:
        return self.store.size(queue, self.visibility_timeout)

    def _purge(self, queue: str) -> int:
        return self.store.purge(queue, self.visibility_timeout)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self.store.delete(queue)

    def _restore(self, message: Any) -> None:
        """Return a fetched message to its queue by clearing its reservation.

        The base class re-publishes a copy, which here would leave the
        original row behind to be delivered a second time.
        """
        self.store.release([message.delivery_tag])

    def drain_events(self, timeout: float | None = None, callback: Any = None) -> Any:
        """Renew held leases when due, then poll as the virtual channel does."""
        self._renew_leases_if_due()
        return super().drain_events(timeout=timeout, callback=callback)

    def _renew_leases_if_due(self) -> None:
        """Keep our reservations fresh so only a dead holder's ones expire.

        Runs on the consuming thread, the only one allowed to read the QoS
        state; Celery's worker drains events every poll interval even while
        its pool is busy, so leases are renewed for as long as it lives.
        """
        now = time.monotonic()
        if self._qos is None or now < self._next_renewal:
            return
        self._next_renewal = now + self._renew_every
        self.store.renew(self._qos.held_tags())

    def close(self) -> None:
        """Close the channel (returning unacked messages), then the file."""
        try:
            super().close()
        finally:
            self.store.close()


class Transport(virtual.Transport):
    """kombu transport for ``kraiter-sqlite://`` URLs."""

    Channel = Channel

    #: Seconds between polls of an empty queue: low latency at a negligible
    #: cost (an indexed lookup in a local file).
    polling_interval = 0.1

    #: kombu hands us the whole URL instead of splitting host/port/vhost.
    can_parse_url = True
    driver_type = "sqlite"
    driver_name = "kraiter-sqlite"

    # "database is locked" after the busy timeout, or a vanished file: kombu
    # and Celery then reconnect and retry, as for a broker that went away.
    connection_errors = (  # type: ignore[assignment]  # kombu types it as a 1-tuple
        *virtual.Transport.connection_errors,
        sqlite3.OperationalError,
    )

    def driver_version(self) -> str:
        """Report the SQLite library version (shown in Celery's banner/report)."""
        return sqlite3.sqlite_version

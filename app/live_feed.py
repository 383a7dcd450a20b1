"""The live feed inside one web process: a single poller fans stored events out to open streams.

However many streams are open, the process asks the database once per poll for the heads of the
feeds it follows (one query), and once per tenant whose feed moved for the new events; each
stream then filters what it was handed in memory. Opening or resuming a stream costs a few
queries of its own (its catch-up), and nothing after that.

Streams are generators served by gunicorn threads; each holds a slot of `max_streams` so that
streams can never take every thread from the API.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from sqlalchemy import Row

from app.db import read_only_connection
from app.services import events
from app.services import feed

log = logging.getLogger(__name__)

PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class FeedItem:
    """A stored event as streams need it: filter keys, and its SSE message rendered once."""

    seq: int
    id: str
    name: str
    email: str
    message: str

    @classmethod
    def of(cls, row: Row[Any]) -> FeedItem:
        data = json.dumps(events.event_view(row), separators=(",", ":"))  # type: ignore[arg-type]
        return cls(row.feed_seq, row.id, row.name, row.email, f"id: {row.id}\ndata: {data}\n\n")


def _items(rows: list[Row[Any]]) -> list[FeedItem]:
    return [FeedItem.of(row) for row in rows]


class StreamLimitReached(Exception):
    """Every stream slot of this process is taken."""


@dataclass(eq=False)
class Subscription:
    """One open stream's mailbox. The hub delivers every event after `start`, in feed order."""

    tenant_id: str
    start: int
    max_backlog: int
    _items: deque[FeedItem] = field(default_factory=deque)
    _ready: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False  # the process is shutting down
    overflowed: bool = False  # the reader fell too far behind; it must resume from the database

    def push(self, items: list[FeedItem]) -> None:
        with self._ready:
            if len(self._items) + len(items) > self.max_backlog:
                self.overflowed = True
            else:
                self._items.extend(items)
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self.closed = True
            self._ready.notify()

    def take(self, timeout: float) -> list[FeedItem]:
        """What arrived since the last call, waiting up to `timeout` seconds for something."""
        with self._ready:
            if not (self._items or self.closed or self.overflowed):
                self._ready.wait(timeout)
            batch = list(self._items)
            self._items.clear()
            return batch

    @property
    def ended(self) -> bool:
        return self.closed or self.overflowed


_HUBS: weakref.WeakSet[FeedHub] = weakref.WeakSet()


def close_all_hubs() -> None:
    """End every open stream of this process."""
    for hub in list(_HUBS):
        hub.close()


def signal_safe_closer(close: Callable[[], None] = close_all_hubs) -> Callable[[], None]:
    """A function a signal handler may call to have `close` run: by default, every open stream
    of this process is ended.

    Closing takes locks, and a Python signal handler runs between two bytecodes of the main
    thread, possibly inside another run of itself (a PaaS sends SIGTERM to the process group
    and gunicorn's master forwards it once more): a handler that took the lock its interrupted
    self held would wait forever. The returned function only writes a byte to a pipe; a thread
    started here does the closing. Call this in the process that serves (after the fork).
    """
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)

    def close_when_woken() -> None:
        os.read(wake_read, 1)
        close()

    threading.Thread(target=close_when_woken, name="kraiter-stream-closer", daemon=True).start()

    def wake() -> None:
        with contextlib.suppress(BlockingIOError):  # woken already, many times over
            os.write(wake_write, b"x")

    return wake


class FeedHub:
    """Follows the feeds of the tenants that have open streams in this process."""

    def __init__(self, *, poll_interval: float, max_streams: int, max_backlog: int = 10_000
                 ) -> None:
        _HUBS.add(self)
        self._poll_interval = poll_interval
        self._max_backlog = max_backlog
        self._slots = threading.BoundedSemaphore(max_streams)
        self._lock = threading.Lock()
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._positions: dict[str, int] = {}  # per tenant: everything up to here was delivered
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, tenant_id: str) -> Subscription:
        """Open a mailbox for the tenant's events from now on (or StreamLimitReached)."""
        if not self._slots.acquire(blocking=False):
            raise StreamLimitReached()
        try:
            self._ensure_polling()
            with read_only_connection() as connection:
                head = feed.heads(connection, tenant_ids=[tenant_id])[tenant_id]
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            if self._stop.is_set():  # checked under the lock `close` takes: none is missed
                self._slots.release()
                raise StreamLimitReached()
            # If the tenant is followed already, its position is at least as new as `head`.
            start = self._positions.setdefault(tenant_id, head)
            subscription = Subscription(tenant_id, start, self._max_backlog)
            self._subscriptions.setdefault(tenant_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            others = self._subscriptions.get(subscription.tenant_id, set())
            if subscription in others:
                others.discard(subscription)
                self._slots.release()
            if not others:
                self._subscriptions.pop(subscription.tenant_id, None)
                self._positions.pop(subscription.tenant_id, None)

    def close(self) -> None:
        """End every stream (graceful shutdown: clients reconnect elsewhere and resume)."""
        with self._lock:
            self._stop.set()
            subscriptions = [s for group in self._subscriptions.values() for s in group]
        for subscription in subscriptions:
            subscription.close()

    def open_streams(self) -> int:
        with self._lock:
            return sum(len(group) for group in self._subscriptions.values())

    def _ensure_polling(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="kraiter-live-feed",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_interval):
            try:
                self.poll()
            except Exception:  # the database may be away for a moment; streams just wait
                log.exception("live feed poll failed")
                self._stop.wait(min(5.0, 10 * self._poll_interval))

    def poll(self) -> None:
        """One round: read what is new in every followed feed and hand it to its streams."""
        with self._lock:
            followed = dict(self._positions)
        if not followed:
            return
        with read_only_connection() as connection:
            heads = feed.heads(connection, tenant_ids=followed)
            for tenant_id, head in heads.items():
                position = followed[tenant_id]
                while position < head:
                    rows = feed.read_after(connection, tenant_id=tenant_id, after=position,
                                           limit=PAGE_SIZE)
                    if len(rows) == PAGE_SIZE:
                        position = rows[-1].feed_seq
                    else:  # read to the end: everything up to the head was seen (or a hole)
                        position = max(head, rows[-1].feed_seq) if rows else head
                    self._deliver(tenant_id, _items(rows), position)

    def _deliver(self, tenant_id: str, items: list[FeedItem], position: int) -> None:
        with self._lock:
            if tenant_id not in self._positions:
                return  # its last stream closed meanwhile
            for subscription in self._subscriptions.get(tenant_id, ()):
                if items:
                    subscription.push(items)
            self._positions[tenant_id] = position


def follow(hub: FeedHub, subscription: Subscription, *, after: int,
           heartbeat_s: float, still_allowed: Callable[[], bool]
           ) -> Iterator[list[FeedItem]]:
    """The subscription's events after position `after`, in order, with no gap and no repeat.

    First reads the database from `after` up to where the hub took over (`subscription.start`),
    then relays the hub's deliveries, a batch at a time. Yields an empty batch when a heartbeat
    is due. Ends when the process shuts down, the reader fell too far behind, or
    `still_allowed()` turns false.
    """
    cursor = after
    try:
        while cursor < subscription.start:
            with read_only_connection() as connection:
                rows = feed.read_after(connection, tenant_id=subscription.tenant_id,
                                       after=cursor, limit=PAGE_SIZE)
            if not rows:
                break
            cursor = rows[-1].feed_seq
            yield _items(rows)
        next_beat = time.monotonic() + heartbeat_s
        while not subscription.ended:
            batch = subscription.take(timeout=max(0.0, next_beat - time.monotonic()))
            if subscription.ended:
                return
            fresh = [item for item in batch if item.seq > cursor]
            if fresh:
                cursor = fresh[-1].seq
                yield fresh
            if time.monotonic() >= next_beat:
                if not still_allowed():
                    return
                next_beat = time.monotonic() + heartbeat_s
                yield []
    finally:
        hub.unsubscribe(subscription)

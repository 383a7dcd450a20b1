"""Group commit for the broker: many requests' events travel in one Celery message.

Publishing a message costs about half a millisecond whatever its size, so one message per event
caps a web process at a few thousand events a second and makes the worker pay per-message costs
too. Request threads hand their events to one publisher thread per process and wait; while it
publishes, the next requests queue up and go together in the following message. The publisher
also lingers after the first event of a batch, for at most `KRAITER_INGEST_LINGER_MS`, as long
as more events keep arriving (each within `QUIET_S` of the last): under load that turns messages
of a couple of events into messages of dozens, which is what the worker's per-message cost
needs, and once the requests stop coming (all of them are in the batch, waiting) it publishes
at once instead of sitting out the rest of the linger. A request is answered only after its
message is in the broker.

Lingering only pays while more events are on their way, so requests that will most likely submit
(single events, from the WSGI fast path) say so with `expecting()`: once every such request is
waiting in the batch, a batcher made with `linger_only_for_expected` sends it without waiting for
the quiet gap. That is PostgreSQL's commit_delay with commit_siblings, for the broker.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.errors import ServiceUnavailable

log = logging.getLogger(__name__)

Publish = Callable[[list[dict[str, Any]]], None]
QUIET_S = 0.002


class _Ticket:
    """One request's events; `done` is held until the publisher has dealt with them.

    A bare lock, released by the publisher, rather than a `threading.Event`: an Event is a
    condition variable with a lock of its own and a waiter lock per wait, about three times the
    work to make, wait on and set, for every request.
    """

    __slots__ = ("done", "error", "events")

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.done = threading.Lock()
        self.done.acquire()
        self.error: BaseException | None = None


class IngestBatcher:
    """Collects events from request threads and publishes them in as few messages as possible."""

    def __init__(self, publish: Publish, *, max_batch: int = 500, linger_s: float = 0.0,
                 timeout_s: float = 10.0, quiet_s: float = QUIET_S,
                 linger_only_for_expected: bool = False) -> None:
        self._publish = publish
        # With it, the publisher lingers only while requests inside `expecting()` are yet to
        # submit; without it (callers that do not announce themselves), until a quiet gap.
        self._linger_only_for_expected = linger_only_for_expected
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._quiet_s = quiet_s
        self._timeout_s = timeout_s
        self._queue: queue.SimpleQueue[_Ticket] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._owner_pid: int | None = None
        self._expected = 0  # requests inside `expecting()`: on their way to `submit`, or in it
        self._counting = threading.Lock()

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Around a request that will probably `submit`: the publisher lingers for it."""
        with self._counting:
            self._expected += 1
        try:
            yield
        finally:
            with self._counting:
                self._expected -= 1

    def submit(self, events: list[dict[str, Any]]) -> None:
        """Block until `events` are in the broker; raise ServiceUnavailable if they are not."""
        ticket = _Ticket(events)
        self._ensure_publisher()
        self._queue.put(ticket)
        if not ticket.done.acquire(timeout=self._timeout_s):
            raise ServiceUnavailable("The event queue is not answering; retry shortly.",
                                     headers={"Retry-After": "1"})
        if ticket.error is not None:
            raise ServiceUnavailable("The event queue is unavailable; retry shortly.",
                                     headers={"Retry-After": "1"})

    def _ensure_publisher(self) -> None:
        # Threads do not survive fork(): a forked web worker starts its own publisher.
        if self._owner_pid == os.getpid():
            return
        with self._lock:
            if self._owner_pid != os.getpid():
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._run, name="ingest-publisher", daemon=True).start()
                self._owner_pid = os.getpid()

    def _take_batch(self) -> list[_Ticket]:
        batch = [self._queue.get()]
        count = len(batch[0].events)
        deadline = time.monotonic() + self._linger_s
        while count < self._max_batch:
            ticket = self._next_ticket(waited=len(batch), deadline=deadline)
            if ticket is None:
                break
            batch.append(ticket)
            count += len(ticket.events)
        return batch

    def _next_ticket(self, *, waited: int, deadline: float) -> _Ticket | None:
        """The next request for this batch: one already queued, or one worth waiting for."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._linger_only_for_expected and waited >= self._expected:
            return None  # nobody else is on the way: waiting would only delay
        wait = min(deadline - time.monotonic(), self._quiet_s)
        if wait <= 0:
            return None
        try:
            return self._queue.get(timeout=wait)
        except queue.Empty:  # nothing more for a while: waiting longer only adds latency
            return None

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            error: BaseException | None = None
            try:
                self._publish([event for ticket in batch for event in ticket.events])
            except Exception as exc:  # every waiter must hear about it, whatever it is
                log.exception("ingest_publish_failed", extra={"events": len(batch)})
                error = exc
            for ticket in batch:
                ticket.error = error
                ticket.done.release()

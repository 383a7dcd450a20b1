"""A per-process cache of active API keys that PostgreSQL keeps honest.

Looking a key up through the ORM costs a third of the web process's CPU on the ingest path.
Instead, each web process remembers key hash → tenant, and a revocation publishes
`NOTIFY kraiter_api_keys` in its transaction. A lookup first makes sure that a bare round trip
(`SELECT 1`) on a LISTEN connection was sent after the request arrived, and applies the
notifications it brought: the listening backend forwards a notification when it next reads a
statement, so a key revoked before a request arrives is refused by it. Merely reading what has
already arrived (no round trip) let about one request in a hundred through right after the
revoking commit; with the round trip, none in our tests. (With the connection busy without a
pause, PostgreSQL has been seen to forward a notification up to a few milliseconds late.) One
round trip serves every request that arrived before it was sent, so under load, requests that
queue for the connection share one.

Anything uncertain disables the cache rather than risk serving a revoked key: no LISTEN
connection (SQLite, or PostgreSQL unreachable) means every lookup goes to the database, and a
lost connection clears the cache, since notifications may have been missed.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

log = logging.getLogger(__name__)

CHANNEL = "kraiter_api_keys"
RECONNECT_AFTER_S = 5.0
MAX_ENTRIES = 10_000


class KeyCache:
    """Key hash → tenant id, invalidated by PostgreSQL notifications."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        self._generation = 0  # bumped whenever the entries are forgotten
        self._listener: Any = None
        self._probe: Any = None  # a cursor of the listener
        # Moments, in order: each lookup takes one on arrival, each round trip one as it is
        # sent (`next()` on a count is atomic). `_probed_at`: the last round trip's.
        self._arrivals = itertools.count()
        self._probed_at = -1
        self._owner_pid: int | None = None
        self._retry_at = 0.0

    def serves(self, engine: Engine) -> bool:
        """Whether this cache belongs to `engine`."""
        return self._engine is engine

    def lookup(self, digest: str, load: Callable[[str], str | None]) -> str | None:
        """The tenant of an active key with hash `digest`; `load` asks the database."""
        arrived = next(self._arrivals)
        with self._lock:
            listening = self._catch_up(arrived)
            generation = self._generation
            cached = self._entries.get(digest) if listening else None
        if cached is not None:
            return cached
        tenant_id = load(digest)
        if tenant_id is not None and listening:
            loaded = next(self._arrivals)
            with self._lock:
                # Store only if no notification arrived while we were loading (whoever applied
                # it): it might have been about this very key.
                if (self._catch_up(loaded) and self._generation == generation
                        and len(self._entries) < MAX_ENTRIES):
                    self._entries.setdefault(digest, tenant_id)
        return tenant_id

    def _catch_up(self, arrived: int) -> bool:
        """Apply the revocations committed before moment `arrived` (from `_arrivals`); False
        when the cache must not be used right now. Called with the lock held."""
        if self._engine.dialect.name != "postgresql":
            return False
        if self._owner_pid != os.getpid():  # a forked child must not share the parent's socket
            self._listener, self._owner_pid = None, os.getpid()
            self._forget_all()
        if self._listener is None and not self._connect():
            return False
        if self._probed_at < arrived:  # no round trip since then: make one
            sent_at = next(self._arrivals)
            try:
                self._probe.execute("SELECT 1")
            except Exception:
                log.warning("api_key_listener_lost", exc_info=True)
                self._close()
                return False
            self._probed_at = sent_at
        if self._listener.notifies:
            self._listener.notifies.clear()
            # A revocation is rare: forgetting everything is simpler than matching payloads,
            # and also covers notifications that carry no payload.
            self._forget_all()
            return False
        return True

    def _forget_all(self) -> None:
        self._entries.clear()
        self._generation += 1

    def _connect(self) -> bool:
        if time.monotonic() < self._retry_at:
            return False
        try:
            proxied = self._engine.raw_connection()
            proxied.detach()  # ours for good: never handed back to the pool
            connection: Any = proxied.dbapi_connection
            connection.autocommit = True
            probe = connection.cursor()
            probe.execute(f"LISTEN {CHANNEL}")
        except Exception:
            log.warning("api_key_listener_unavailable", exc_info=True)
            self._retry_at = time.monotonic() + RECONNECT_AFTER_S
            return False
        self._listener, self._probe, self._probed_at = connection, probe, -1
        self._forget_all()
        return True

    def _close(self) -> None:
        try:
            self._listener.close()
        except Exception:  # the connection is already broken; nothing else to do
            log.debug("api_key_listener_close_failed", exc_info=True)
        self._listener = None
        self._forget_all()
        self._retry_at = time.monotonic() + RECONNECT_AFTER_S

"""A per-process cache of active API keys that PostgreSQL keeps honest.

Looking a key up through the ORM costs a third of the web process's CPU on the ingest path.
Instead, each web process remembers key hash → tenant, and a revocation publishes
`NOTIFY kraiter_api_keys` in its transaction. Each lookup first makes one bare round trip
(`SELECT 1`, about 10 µs of CPU) on a LISTEN connection, and applies the notifications it
brings: a listening backend sends the notifications committed before a statement ahead of that
statement's answer, so a key revoked before a request arrives is refused by it. Merely reading
what has already arrived (no round trip) is not enough: the listening backend forwards a
notification a moment after the revoking commit returns, and a request in that moment would
still be let in.

Anything uncertain disables the cache rather than risk serving a revoked key: no LISTEN
connection (SQLite, or PostgreSQL unreachable) means every lookup goes to the database, and a
lost connection clears the cache, since notifications may have been missed.
"""

from __future__ import annotations

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
        self._listener: Any = None
        self._probe: Any = None  # a cursor of the listener
        self._owner_pid: int | None = None
        self._retry_at = 0.0

    def serves(self, engine: Engine) -> bool:
        """Whether this cache belongs to `engine`."""
        return self._engine is engine

    def lookup(self, digest: str, load: Callable[[str], str | None]) -> str | None:
        """The tenant of an active key with hash `digest`; `load` asks the database."""
        with self._lock:
            listening = self._drain_notifications()
            cached = self._entries.get(digest) if listening else None
        if cached is not None:
            return cached
        tenant_id = load(digest)
        if tenant_id is not None and listening:
            with self._lock:
                # Store only if no notification arrived while we were loading: it might have
                # been about this very key.
                if self._drain_notifications() and len(self._entries) < MAX_ENTRIES:
                    self._entries.setdefault(digest, tenant_id)
        return tenant_id

    def _drain_notifications(self) -> bool:
        """Apply pending revocations; False when the cache must not be used right now."""
        if self._engine.dialect.name != "postgresql":
            return False
        if self._owner_pid != os.getpid():  # a forked child must not share the parent's socket
            self._listener, self._owner_pid = None, os.getpid()
            self._entries.clear()
        if self._listener is None and not self._connect():
            return False
        try:
            self._probe.execute("SELECT 1")  # the round trip that brings every notification
        except Exception:
            log.warning("api_key_listener_lost", exc_info=True)
            self._close()
            return False
        if self._listener.notifies:
            self._listener.notifies.clear()
            # A revocation is rare: forgetting everything is simpler than matching payloads,
            # and also covers notifications that carry no payload.
            self._entries.clear()
            return False
        return True

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
        self._listener, self._probe = connection, probe
        self._entries.clear()
        return True

    def _close(self) -> None:
        try:
            self._listener.close()
        except Exception:  # the connection is already broken; nothing else to do
            log.debug("api_key_listener_close_failed", exc_info=True)
        self._listener = None
        self._entries.clear()
        self._retry_at = time.monotonic() + RECONNECT_AFTER_S

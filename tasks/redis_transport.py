"""kombu's Redis transport, keeping one Redis client per channel instead of one per command.

kombu builds a new `redis.Redis` for every publish, every unacked-bookkeeping write and every
acknowledgement (`Channel.conn_or_acquire` → `_create_client`), and redis-py 8 spends about as
long building one (its response-callback tables: ~140 µs on the 2-core benchmark box) as the
acknowledgement's round trip takes. That is twice per message in the worker's main process and
once per message in the web process. A client is only a handle on the channel's connection
pool, safe to reuse, so this keeps one for as long as the channel's pool lives.

Registered for the `redis://` and `rediss://` schemes in every process that loads the Celery app
(`register`); Flower's own broker view is unaffected.
"""

# kombu is untyped; overriding its methods is the whole point here.
# mypy: disable-error-code="no-untyped-call,misc"

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

TRANSPORT_PATH = "tasks.redis_transport:Transport"


class Channel(kombu_redis.Channel):
    """A Redis channel whose synchronous client is made once per connection pool."""

    _kept_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # BRPOP and publishing: kombu already keeps that one (`client`)
            return super()._create_client(asynchronous=True)
        pool = self.pool  # a new pool after a reconnect or a fork: a new client for it
        client = self._kept_client
        if client is None or client.connection_pool is not pool:
            client = self._kept_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def register() -> None:
    """Use this transport for `redis://` and `rediss://` broker URLs (idempotent)."""
    TRANSPORT_ALIASES["redis"] = TRANSPORT_PATH
    TRANSPORT_ALIASES["rediss"] = TRANSPORT_PATH

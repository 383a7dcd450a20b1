"""kombu's Redis transport, keeping one Redis client per channel instead of one per command,
and writing its envelopes with orjson.

kombu builds a new `redis.Redis` for every publish, every unacked-bookkeeping write and every
acknowledgement (`Channel.conn_or_acquire` → `_create_client`), and redis-py 8 spends about as
long building one (its response-callback tables: ~140 µs on the 2-core benchmark box) as the
acknowledgement's round trip takes. That is twice per message in the worker's main process and
once per message in the web process. A client is only a handle on the channel's connection
pool, safe to reuse, so this keeps one for as long as the channel's pool lives.

Every message travels in a JSON envelope (headers, properties, the body in base64) that kombu
writes with the standard library: when publishing, again for the unacknowledged copy the worker
keeps in Redis, and reads when it receives. For a 500-event ingest message that is a 190 KB
document three times over, about 0.9 ms of each message's CPU. `envelope_dumps` and
`envelope_loads` do the same with orjson whenever that gives the very same document, and hand
everything else (kombu's tagged types: datetimes, UUIDs, bytes, ...; integers beyond 64 bits;
non-finite floats) to kombu's own functions, so what is read back never differs.

Registered for the `redis://` and `rediss://` schemes in every process that loads the Celery app
(`register`); Flower's own broker view is unaffected.
"""

# kombu is untyped; overriding its methods is the whole point here.
# mypy: disable-error-code="no-untyped-call,misc"

from __future__ import annotations

import math
from typing import Any

import orjson
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

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


def _plain(value: Any) -> bool:
    """Whether a document holds only JSON's own types (no subclasses), which the standard library
    and orjson write alike: str keys, integers orjson takes, finite floats."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-(2**63) <= value < 2**64)
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return all(type(key) is str and _plain(item) for key, item in value.items())
    if kind is list or kind is tuple:
        return all(_plain(item) for item in value)
    return False


def _read_alike(value: Any) -> bool:
    """Whether orjson's reading of a document is the standard library's and kombu's: no floats
    (orjson reads integers beyond 64 bits as floats) and no kombu type tags."""
    kind = type(value)
    if kind is dict:
        return (value.keys() != {"__type__", "__value__"}
                and all(_read_alike(item) for item in value.values()))
    if kind is list:
        return all(_read_alike(item) for item in value)
    return kind is not float


def envelope_dumps(value: Any) -> str:
    """`kombu.utils.json.dumps`, written by orjson when the document is plain JSON."""
    if _plain(value):
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # a lone surrogate, which kombu writes escaped
            pass
    return str(kombu_json.dumps(value))


def envelope_loads(text: str) -> Any:
    """`kombu.utils.json.loads`, read by orjson when that reads it the same."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN, a lone surrogate, ...: kombu reads or refuses it
        return kombu_json.loads(text)
    return value if _read_alike(value) else kombu_json.loads(text)


def register() -> None:
    """Use this transport for `redis://` and `rediss://` broker URLs (idempotent)."""
    TRANSPORT_ALIASES["redis"] = TRANSPORT_PATH
    TRANSPORT_ALIASES["rediss"] = TRANSPORT_PATH
    # kombu's Redis transport calls these module-level names for every envelope it writes and
    # reads; the replacements give the same documents back (see the module docstring).
    kombu_redis.dumps = envelope_dumps  # type: ignore[attr-defined,assignment]
    kombu_redis.loads = envelope_loads  # type: ignore[attr-defined,assignment]

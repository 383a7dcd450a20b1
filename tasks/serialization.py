"""The ingest messages' serializer: orjson, registered with kombu as `orjson`.

Ingest messages carry nearly all of the broker's bytes. kombu's `json` writes them with the
standard library and reads them with an object hook called for every event; orjson does both
several times faster (the web process and the worker each spent more on JSON than on anything
else per batch). It is exact only for what it writes itself: it refuses integers beyond 64
bits, so `tasks.events.publish_ingest` sends a message holding one with `json` instead, and it
would read those as floats, which it therefore never gets.
"""

from __future__ import annotations

import orjson
from kombu import serialization

NAME = "orjson"
CONTENT_TYPE = "application/x-orjson"


def register() -> None:
    """Make `orjson` a serializer name for Celery's `serializer` and `accept_content`."""
    serialization.register(  # type: ignore[no-untyped-call]
        NAME, orjson.dumps, orjson.loads, content_type=CONTENT_TYPE,
        content_encoding="utf-8")

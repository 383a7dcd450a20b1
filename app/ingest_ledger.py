"""The ingest ledger: every event message the web published and no worker has stored yet.

Redis as a Celery broker has one hole: a worker takes a message off the queue (BRPOP) and only
then records it as unacknowledged, so a worker killed between the two loses that message for
good (celery/kombu#305 and friends). For most tasks that is covered by the database (sends and
sequence steps have their own sweepers); for accepted events the broker *is* the only copy.

So the web process writes each message into this ledger before publishing it, the worker strikes
it out after the transaction that stored the events commits, and a beat task publishes again
whatever stays in the ledger too long (`requeue_overdue`). Storing is idempotent, so a message
published twice stores nothing twice. The embedded broker keeps messages until they are acked
and needs no ledger (`NoLedger`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from typing import Protocol

import redis

from app import json_codec

Messages = list[dict[str, Any]]


class Ledger(Protocol):
    def record(self, task_id: str, messages: Messages) -> None: ...

    def strike(self, task_ids: Iterable[str]) -> None: ...

    def requeue_overdue(self, *, older_than_s: float, publish: Callable[[str, Messages], None],
                        limit: int = 100) -> int: ...

    def pending(self) -> int: ...


class NoLedger:
    """For brokers that lose nothing in flight."""

    def record(self, task_id: str, messages: Messages) -> None:
        pass

    def strike(self, task_ids: Iterable[str]) -> None:
        pass

    def requeue_overdue(self, *, older_than_s: float, publish: Callable[[str, Messages], None],
                        limit: int = 100) -> int:
        return 0

    def pending(self) -> int:
        return 0


class RedisLedger:
    """A hash of message payloads by task id, and a sorted set of when each was (re)published."""

    PAYLOADS = "kraiter:ingest-ledger:payloads"
    SINCE = "kraiter:ingest-ledger:since"

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> RedisLedger:
        return cls(redis.Redis.from_url(url, socket_timeout=10, health_check_interval=30,
                                        decode_responses=True))

    def record(self, task_id: str, messages: Messages) -> None:
        """Note a message about to be published (one round trip, atomic)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self.PAYLOADS, task_id, json_codec.dumps(messages))
        pipe.zadd(self.SINCE, {task_id: time.time()})
        pipe.execute()

    def strike(self, task_ids: Iterable[str]) -> None:
        """These messages' events are stored (or they were never published): forget them."""
        ids = list(task_ids)
        if not ids:
            return
        # No MULTI/EXEC (two replies fewer to parse, on every batch): payloads first, so a
        # strike cut short leaves only index entries, which `requeue_overdue` drops.
        pipe = self._redis.pipeline(transaction=False)
        pipe.hdel(self.PAYLOADS, *ids)
        pipe.zrem(self.SINCE, *ids)
        pipe.execute()

    def requeue_overdue(self, *, older_than_s: float, publish: Callable[[str, Messages], None],
                        limit: int = 100) -> int:
        """Publish again messages recorded more than `older_than_s` ago; return how many."""
        overdue: list[str] = list(self._redis.zrangebyscore(  # type: ignore[arg-type]
            self.SINCE, "-inf", time.time() - older_than_s, start=0, num=limit))
        requeued = 0
        for task_id in overdue:
            payload = self._redis.hget(self.PAYLOADS, task_id)
            if payload is None:  # struck out meanwhile, or a stray index entry
                self._redis.zrem(self.SINCE, task_id)
                continue
            # Bump first: if publishing fails, the next pass tries again after the same delay.
            self._redis.zadd(self.SINCE, {task_id: time.time()})
            publish(task_id, json.loads(str(payload)))
            requeued += 1
        return requeued

    def pending(self) -> int:
        return int(self._redis.zcard(self.SINCE))


def ledger_for(redis_url: str | None) -> Ledger:
    """The ledger that fits the broker: Redis needs one, the embedded broker does not."""
    return RedisLedger.from_url(redis_url) if redis_url else NoLedger()

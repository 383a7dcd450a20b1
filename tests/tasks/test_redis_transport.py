"""The Redis transport keeps one client per channel and still delivers, acks and redelivers; its
envelopes read back exactly as kombu's own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kombu import Connection
from kombu.simple import SimpleQueue
from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

from app.config import Settings
from tasks import redis_transport
from tests.support import backend


@pytest.fixture
def queue(settings: Settings) -> Iterator[SimpleQueue]:
    if backend() != "postgres":
        pytest.skip("needs the Redis broker")
    redis_transport.register()
    with Connection(settings.broker_url) as connection:
        simple = connection.SimpleQueue("kraiter-transport-test")
        simple.clear()
        yield simple
        simple.clear()
        simple.close()


def test_the_kraiter_transport_serves_redis_urls(queue: SimpleQueue) -> None:
    assert isinstance(queue.channel, redis_transport.Channel)


def test_acks_and_publishes_share_one_client_and_messages_flow(queue: SimpleQueue) -> None:
    channel = queue.channel
    for number in range(3):
        queue.put({"n": number})
    received = [queue.get(timeout=5) for _ in range(3)]
    for message in received:
        message.ack()

    assert [message.payload["n"] for message in received] == [0, 1, 2]
    assert channel._create_client() is channel._create_client()
    client = channel._create_client()
    assert not [message for message in received  # every ack reached Redis
                if client.hexists(channel.unacked_key, message.delivery_tag)]
    with pytest.raises(SimpleQueue.Empty):
        queue.get(timeout=0.2)


def test_a_new_pool_gets_a_new_client(queue: SimpleQueue) -> None:
    channel = queue.channel
    before = channel._create_client()
    channel._disconnect_pools()  # what kombu does after a fork or a lost connection

    after = channel._create_client()

    assert after is not before
    assert after.connection_pool is channel.pool
    queue.put({"n": 1})
    message = queue.get(timeout=5)
    message.ack()
    assert message.payload == {"n": 1}


def test_an_unacked_message_is_delivered_again(queue: SimpleQueue) -> None:
    queue.put({"n": 7})
    first = queue.get(timeout=5)
    first.requeue()

    again = queue.get(timeout=5)
    again.ack()

    assert again.payload == {"n": 7}


# What kombu's envelopes may hold: JSON's own types, and the types kombu tags (datetimes,
# decimals, UUIDs, bytes); integers beyond 64 bits, non-finite floats, lone surrogates.
_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(),
    st.text(st.characters(blacklist_categories=())), st.datetimes(timezones=st.just(UTC)),
    st.decimals(allow_nan=False), st.uuids(), st.binary(max_size=8))
_DOCUMENTS = st.recursive(
    _LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=6), inner, max_size=4), max_leaves=12)


def _as_kombu_reads(document: str) -> str:
    return repr(kombu_json.loads(document))  # repr: NaN equals itself there


@hypothesis_settings(max_examples=500, deadline=None)
@given(_DOCUMENTS)
@example({"n": float("nan"), "big": 2**70, "inf": [float("-inf")]})
@example({"lone": "\udc80", "when": datetime(2026, 11, 27, tzinfo=UTC), "id": UUID(int=7)})
def test_envelopes_read_back_exactly_as_kombus_own(document: Any) -> None:
    ours = redis_transport.envelope_dumps(document)
    theirs = str(kombu_json.dumps(document))

    # A stock kombu reads what we write as it reads its own document, and we read both so.
    assert _as_kombu_reads(ours) == _as_kombu_reads(theirs)
    assert repr(redis_transport.envelope_loads(ours)) == _as_kombu_reads(theirs)
    assert repr(redis_transport.envelope_loads(theirs)) == _as_kombu_reads(theirs)


def test_plain_envelopes_are_written_and_read_by_orjson() -> None:
    envelope = {"body": "eyJhIjoxfQ==", "headers": {"task": "events.ingest", "retries": 0,
                                                     "note": "é"}, "properties": {}}
    written = redis_transport.envelope_dumps(envelope)

    assert written == ('{"body":"eyJhIjoxfQ==","headers":{"task":"events.ingest","retries":0,'
                       '"note":"é"},"properties":{}}')  # compact, UTF-8: orjson's, not kombu's
    assert redis_transport.envelope_loads(written) == envelope


def test_registering_puts_the_envelope_codec_in_kombus_redis_transport() -> None:
    redis_transport.register()
    assert kombu_redis.dumps is redis_transport.envelope_dumps  # type: ignore[attr-defined]
    assert kombu_redis.loads is redis_transport.envelope_loads  # type: ignore[attr-defined]

"""The Redis transport keeps one client per channel and still delivers, acks and redelivers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kombu import Connection
from kombu.simple import SimpleQueue

from app.config import Settings
from tasks import redis_transport
from tests.support import backend

pytestmark = pytest.mark.skipif(backend() != "postgres", reason="needs the Redis broker")


@pytest.fixture
def queue(settings: Settings) -> Iterator[SimpleQueue]:
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

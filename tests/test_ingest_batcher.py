"""The ingest batcher: requests wait until their events are published, together where possible."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from app.errors import ServiceUnavailable
from app.ingest_batcher import IngestBatcher


class _Broker:
    """A stand-in publish target that keeps every message it was given."""

    def __init__(self, *, fail: bool = False, delay_s: float = 0.0) -> None:
        self.messages: list[list[dict[str, Any]]] = []
        self.fail = fail
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def publish(self, events: list[dict[str, Any]]) -> None:
        time.sleep(self.delay_s)
        if self.fail:
            raise ConnectionError("broker down")
        with self._lock:
            self.messages.append(list(events))

    def published(self) -> list[int]:
        with self._lock:
            return [event["n"] for message in self.messages for event in message]


def test_each_request_returns_once_its_events_are_published() -> None:
    broker = _Broker(delay_s=0.002)
    batcher = IngestBatcher(broker.publish, linger_s=0.005)

    def send(n: int) -> bool:
        batcher.submit([{"n": n}])
        return n in broker.published()

    with ThreadPoolExecutor(max_workers=16) as pool:
        seen_on_return = list(pool.map(send, range(200)))

    assert all(seen_on_return)
    assert sorted(broker.published()) == list(range(200))
    assert len(broker.messages) < 200  # concurrent requests shared messages


def test_a_failed_publish_is_a_503_for_every_request_in_it() -> None:
    batcher = IngestBatcher(_Broker(fail=True).publish, linger_s=0.01)

    def send(n: int) -> str:
        try:
            batcher.submit([{"n": n}])
        except ServiceUnavailable as error:
            return error.message
        return "accepted"

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(8)))

    assert answers == ["The event queue is unavailable; retry shortly."] * 8


def test_a_publish_that_hangs_is_a_503_after_the_timeout() -> None:
    batcher = IngestBatcher(_Broker(delay_s=1.0).publish, timeout_s=0.1)
    started = time.monotonic()

    with pytest.raises(ServiceUnavailable) as refused:
        batcher.submit([{"n": 1}])

    assert refused.value.message == "The event queue is not answering; retry shortly."
    assert refused.value.headers == {"Retry-After": "1"}
    assert time.monotonic() - started < 0.9


def test_once_every_expected_request_is_in_the_batch_it_goes_without_lingering() -> None:
    broker = _Broker()
    batcher = IngestBatcher(broker.publish, linger_s=5.0, quiet_s=5.0,
                            linger_only_for_expected=True)
    all_in = threading.Barrier(4)

    def send(n: int) -> None:
        with batcher.expecting():
            all_in.wait()  # all four are on their way before any of them submits
            batcher.submit([{"n": n}])

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(send, range(4)))

    assert time.monotonic() - started < 2.5  # not the 5 s quiet gap
    assert sorted(broker.published()) == [0, 1, 2, 3]
    assert len(broker.messages) <= 2  # they waited for each other (the first may go alone)


def test_a_request_nobody_follows_is_published_at_once() -> None:
    broker = _Broker()
    batcher = IngestBatcher(broker.publish, linger_s=5.0, quiet_s=5.0,
                            linger_only_for_expected=True)
    started = time.monotonic()

    batcher.submit([{"n": 1}])

    assert time.monotonic() - started < 2.5
    assert broker.published() == [1]


def test_without_announced_requests_it_lingers_until_a_quiet_gap() -> None:
    # The send batcher's way: its requests do not announce themselves.
    broker = _Broker()
    batcher = IngestBatcher(broker.publish, linger_s=1.0, quiet_s=0.3)
    started = time.monotonic()

    batcher.submit([{"n": 1}])

    assert time.monotonic() - started >= 0.3
    assert broker.published() == [1]

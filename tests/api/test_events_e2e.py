"""Tracking events end to end: API → broker → real worker → listable."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Tenant
from tests.support import WorkerProcess
from tests.support import wait_for

pytestmark = pytest.mark.usefixtures("worker")


def _listed(tenant: Tenant, query: str = "") -> list[dict[str, Any]]:
    return tenant.get(f"/api/events{query}").get_json()["data"]


def test_guide_example_is_stored_and_listable(tenant: Tenant) -> None:
    response = tenant.post("/events", json={
        "email": "Alice@Example.COM", "event": "purchase.completed",
        "properties": {"orderId": "ord_123", "amount": 49.99, "currency": "GBP"}})

    assert response.status_code == 202
    accepted = response.get_json()
    assert accepted["status"] == "queued"
    assert accepted["id"].startswith("evt_")
    assert accepted["email"] == "Alice@example.com"
    # The domain is case-insensitive; the local part is kept as given.
    events = wait_for(lambda: _listed(tenant, "?email=Alice@EXAMPLE.COM"), message="the event")
    assert _listed(tenant, "?email=alice@example.com") == []
    assert [e["id"] for e in events] == [accepted["id"]]
    item = events[0]
    assert item["event"] == "purchase.completed"
    assert item["properties"] == {"orderId": "ord_123", "amount": 49.99, "currency": "GBP"}
    assert item["source"] == "api"
    assert item["contactId"].startswith("cnt_")
    assert item["timestamp"] == accepted["timestamp"]
    assert item["timestamp"].endswith("Z") and len(item["timestamp"]) == 24


def test_many_events_for_one_new_email_make_one_contact(tenant: Tenant) -> None:
    ids = [tenant.post("/api/events", json={"email": "new@acme.test", "event": f"e{i}"})
           .get_json()["id"] for i in range(30)]

    stored = wait_for(lambda: len(_listed(tenant, "?limit=100")) == 30 and
                      _listed(tenant, "?limit=100"), message="30 events")
    assert sorted(e["id"] for e in stored) == sorted(ids)
    assert len({e["contactId"] for e in stored}) == 1


def test_the_worker_logs_no_routine_line_per_event_batch(tenant: Tenant,
                                                         worker: WorkerProcess) -> None:
    accepted = tenant.post("/api/events", json={"email": "log@acme.test", "event": "quiet"})
    event_id = accepted.get_json()["id"]
    wait_for(lambda: tenant.get(f"/api/events/{event_id}").status_code == 200,
             message="the event")

    assert "ready." in worker.log()  # the log is the worker's, and it logs at INFO
    assert "events.ingest[" not in worker.log()


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_property_values_come_back_exactly_as_sent(tenant: Tenant, batch: bool) -> None:
    # Integers beyond 64 bits are valid JSON that the fast JSON library refuses to write (and
    # would read as floats): such a message must travel another way, unchanged.
    huge = {"big": 2**70, "negative": -(2**70), "u64": 2**64 - 1, "i64": -(2**63),
            "text": "Ünïcode ✓ 日本", "ratio": 0.1 + 0.2}
    plain = {"small": 7, "text": "Ünïcode ✓ 日本", "ratio": 1e-7}
    bodies = [{"email": f"exact{i}@acme.test", "event": "exact", "properties": properties}
              for i, properties in enumerate((huge, plain))]
    if batch:
        answer = tenant.post("/api/events/batch", json={"events": bodies}).get_json()
        ids = [result["id"] for result in answer["results"]]
    else:
        ids = [tenant.post("/api/events", json=body).get_json()["id"] for body in bodies]

    for event_id, body in zip(ids, bodies, strict=True):
        stored = wait_for(lambda event_id=event_id: _stored(tenant, event_id), message="event")
        assert stored["properties"] == body["properties"]
        assert {key: type(value) for key, value in stored["properties"].items()} == {
            key: type(value) for key, value in body["properties"].items()}


def _stored(tenant: Tenant, event_id: str) -> dict[str, Any] | None:
    response = tenant.get(f"/api/events/{event_id}")
    return response.get_json() if response.status_code == 200 else None

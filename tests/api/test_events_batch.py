"""POST /api/events/batch: one result per item, in order; valid items go through on their own."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from app import create_app
from app import db
from app.config import Settings
from app.services import ingest
from tests.conftest import Tenant
from tests.support import wait_for

pytestmark = pytest.mark.usefixtures("worker")


def _listed(tenant: Tenant, query: str = "") -> list[dict[str, Any]]:
    response = tenant.get(f"/api/events?limit=100{query}")
    assert response.status_code == 200, response.get_json()
    return list(response.get_json()["data"])


def _all_listed(tenant: Tenant) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = tenant.get(f"/api/events?limit=100{cursor}").get_json()
        items += page["data"]
        if not page["nextCursor"]:
            return items
        cursor = f"&cursor={page['nextCursor']}"


def _contact(tenant: Tenant, email: str) -> str:
    with db.transaction() as session:
        return ingest.upsert_contacts(session, tenant_id=tenant.id, emails=[email])[email]


def test_mixed_batch_answers_each_item_in_order(tenant: Tenant) -> None:
    known = _contact(tenant, "known@acme.test")
    items: list[Any] = [
        {"email": "ann@acme.test", "event": "first", "properties": {"n": 1}},
        {"email": "not-an-email", "event": "bad.email"},
        {"email": "bob@acme.test", "name": "second"},
        {"email": "ann@acme.test", "event": "email.sent"},
        "not an object",
        {"contactId": "cnt_missing", "event": "orphan"},
        {"contactId": known, "email": "ignored@acme.test", "event": "third",
         "timestamp": "2024-01-01T12:00:00+01:00"},
        {"email": "ann@acme.test", "event": "x", "properties": {"deep": {"a": 1}}},
    ]

    response = tenant.post("/api/events/batch", json={"events": items})

    assert response.status_code == 202
    body = response.get_json()
    results = body["results"]
    assert len(results) == len(items)
    assert [("id" in r, "error" in r) for r in results] == [
        (True, False), (False, True), (True, False), (False, True), (False, True),
        (False, True), (True, False), (False, True)]
    assert [r["error"]["code"] for r in results if "error" in r] == [
        "VALIDATION_ERROR", "VALIDATION_ERROR", "VALIDATION_ERROR", "NOT_FOUND",
        "VALIDATION_ERROR"]
    for result in results:
        if "error" in result:
            assert isinstance(result["error"]["message"], str) and result["error"]["message"]
        else:
            assert result["id"].startswith("evt_") and result["status"] == "queued"
    assert "email" in results[1]["error"]["details"]
    assert "system event" in results[3]["error"]["message"]
    assert "deep" in results[7]["error"]["message"]
    assert results[2]["event"] == "second"
    assert results[6]["email"] == "known@acme.test"
    assert results[6]["timestamp"] == "2024-01-01T11:00:00.000Z"
    assert body["accepted"] == 3 and body["rejected"] == 5

    accepted = {r["id"] for r in results if "id" in r}
    stored = wait_for(lambda: len(_listed(tenant)) == 3 and _listed(tenant),
                      message="the three accepted items")
    assert {e["id"] for e in stored} == accepted
    by_name = {e["event"]: e for e in stored}
    assert by_name["third"]["contactId"] == known
    assert by_name["first"]["properties"] == {"n": 1}


def test_batch_of_500_is_accepted_and_stored(tenant: Tenant) -> None:
    items = [{"email": f"user{i % 7}@acme.test", "event": f"e{i}", "properties": {"i": i}}
             for i in range(500)]

    response = tenant.post("/api/events/batch", json={"events": items})

    assert response.status_code == 202
    results = response.get_json()["results"]
    assert [r["event"] for r in results] == [f"e{i}" for i in range(500)]
    ids = {r["id"] for r in results}
    assert len(ids) == 500
    stored = wait_for(lambda: len(_all_listed(tenant)) == 500 and _all_listed(tenant),
                      timeout=30, message="500 events")
    assert {e["id"] for e in stored} == ids
    # Seven addresses, seven contacts, each with its own timeline.
    assert len({e["contactId"] for e in stored}) == 7
    timeline = _listed(tenant, "&email=user3@acme.test")
    assert {e["event"] for e in timeline} == {f"e{i}" for i in range(3, 500, 7)}


def test_batch_of_501_is_refused_whole(tenant: Tenant) -> None:
    items = [{"email": "a@acme.test", "event": "x"}] * 501

    response = tenant.post("/api/events/batch", json={"events": items})

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "events" in error["details"]


@pytest.mark.parametrize(("body", "field"), [
    ({"events": []}, "events"),
    ({"events": {"email": "a@acme.test", "event": "x"}}, "events"),
    ({"events": None}, "events"),
    ({}, "events"),
    ({"events": [{"email": "a@acme.test", "event": "x"}], "extra": 1}, "extra"),
])
def test_bad_batch_envelopes_are_refused(tenant: Tenant, body: Any, field: str) -> None:
    response = tenant.post("/api/events/batch", json=body)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in error["details"]


@pytest.mark.parametrize("raw", [b"[]", b"{", b"", b'{"events": [NaN]}'])
def test_batch_body_must_be_a_json_object(tenant: Tenant, raw: bytes) -> None:
    response = tenant.post("/api/events/batch", data=raw, content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"


def test_batch_without_prefix_and_for_several_contacts(tenant: Tenant) -> None:
    items = [{"email": email, "event": "joined"}
             for email in ("a@acme.test", "B@Acme.TEST", "c@acme.test")]

    response = tenant.post("/events/batch", json={"events": items})

    assert response.status_code == 202
    assert [r["email"] for r in response.get_json()["results"]] == [
        "a@acme.test", "B@acme.test", "c@acme.test"]
    for email in ("a@acme.test", "B@acme.test", "c@acme.test"):
        wait_for(lambda email=email: len(_listed(tenant, f"&email={email}")) == 1,
                 message=f"the event of {email}")


def test_batch_items_of_another_tenants_contact_are_404(tenant: Tenant,
                                                        other_tenant: Tenant) -> None:
    theirs = _contact(other_tenant, "secret@globex.test")

    response = tenant.post("/api/events/batch", json={"events": [
        {"contactId": theirs, "event": "x"}, {"email": "mine@acme.test", "event": "y"}]})

    results = response.get_json()["results"]
    assert results[0] == {"error": {"code": "NOT_FOUND", "message": results[0]["error"]["message"]}}
    assert "secret@globex.test" not in json.dumps(results)
    stored = wait_for(lambda: _listed(tenant), message="the accepted item")
    assert [e["id"] for e in stored] == [results[1]["id"]]
    assert _listed(other_tenant) == []


def test_batch_where_every_item_fails_is_still_202(tenant: Tenant) -> None:
    response = tenant.post("/api/events/batch", json={"events": [{"event": "x"}, {}]})

    assert response.status_code == 202
    body = response.get_json()
    assert body["accepted"] == 0
    assert all("error" in r for r in body["results"])


def test_a_batch_body_over_256_kib_is_a_413_by_default(tenant: Tenant, settings: Settings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    items = [{"email": f"u{i}@acme.test", "event": "bulk", "properties": {"blob": "x" * 1500}}
             for i in range(400)]
    assert len(json.dumps({"events": items})) > 256 * 1024

    response = tenant.post("/api/events/batch", json={"events": items})

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # KRAITER_MAX_BATCH_BODY_BYTES raises it for senders of large events.
    roomy = create_app(dataclasses.replace(settings, max_batch_body_bytes=4096 * 1024))
    monkeypatch.setattr(roomy.extensions["ingest_batcher"], "submit", lambda messages: None)
    answer = roomy.test_client().post("/api/events/batch", json={"events": items},
                                      headers=tenant.headers)
    assert answer.status_code == 202 and answer.get_json()["accepted"] == 400

"""Contacts over HTTP (contract §4): create, upsert, list, get, update, delete."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import update

from app import db
from app.models import ArchivedEvent
from app.models import Contact
from app.models import Enrolment
from app.models import Event
from app.models import Send
from app.services import ingest
from app.services import sending
from tasks.sends import deliver
from tests.api.test_sequences import active_sequence
from tests.conftest import Tenant
from tests.support import WorkerProcess
from tests.support import wait_for


def _create(tenant: Tenant, email: str, **body: Any) -> dict[str, Any]:
    response = tenant.post("/api/contacts", json={"email": email, **body})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _error(response: Any, status: int, code: str = "VALIDATION_ERROR") -> dict[str, Any]:
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == code
    return error


def _listed(tenant: Tenant, query: str = "") -> list[dict[str, Any]]:
    response = tenant.get(f"/api/contacts{query}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def _store_event(tenant: Tenant, email: str, name: str, *, archived: bool = False) -> str:
    """Store an event the way the worker does (or straight into the archive)."""
    with db.transaction() as session:
        message = ingest.accept_event(session, tenant_id=tenant.id,
                                      data={"email": email, "event": name})
        stored = ingest.store_events(session, messages=[message])[0]
        if archived:
            session.execute(Event.__table__.delete().where(Event.id == stored["id"]))
            session.execute(ArchivedEvent.__table__.insert(), [stored])
    return stored["id"]


def _stored_event_ids(tenant: Tenant) -> set[str]:
    with db.transaction() as session:
        return {
            *session.scalars(select(Event.id).where(Event.tenant_id == tenant.id)),
            *session.scalars(select(ArchivedEvent.id).where(ArchivedEvent.tenant_id == tenant.id)),
        }


def _contact_rows(tenant: Tenant, email: str) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(Contact).where(
            Contact.tenant_id == tenant.id, Contact.email == email)) or 0


# --- POST /api/contacts ---------------------------------------------------------------------


def test_create_returns_the_contact(tenant: Tenant) -> None:
    contact = _create(tenant, "Alice@Example.COM",
                      properties={"plan": "pro", "seats": 3, "trial": False, "gone": None})

    assert contact["id"].startswith("cnt_")
    assert contact["email"] == "Alice@example.com"  # domain lower-cased, local part kept
    assert contact["properties"] == {"plan": "pro", "seats": 3, "trial": False}
    assert contact["subscribed"] is True
    assert contact["unsubscribed"] is False
    assert contact["suppressed"] is False
    assert contact["createdAt"] == contact["updatedAt"]
    assert contact["createdAt"].endswith("Z") and len(contact["createdAt"]) == 24
    assert tenant.get(f"/api/contacts/{contact['id']}").get_json() == contact


def test_create_without_properties_and_unsubscribed(tenant: Tenant) -> None:
    contact = _create(tenant, "bob@acme.test", subscribed=False)

    assert contact["properties"] == {}
    assert contact["subscribed"] is False
    assert contact["unsubscribed"] is True


def test_create_is_served_without_the_api_prefix(tenant: Tenant) -> None:
    response = tenant.post("/contacts", json={"email": "guide@acme.test"})

    assert response.status_code == 201
    assert tenant.get("/contacts/guide@acme.test").get_json()["id"] == response.get_json()["id"]


def test_create_with_an_existing_email_is_a_conflict(tenant: Tenant) -> None:
    first = _create(tenant, "carol@acme.test", properties={"plan": "pro"})

    error = _error(tenant.post("/api/contacts", json={"email": "carol@ACME.test",
                                                      "properties": {"plan": "free"}}),
                   409, "CONFLICT")

    assert "carol@acme.test" in error["message"]
    assert tenant.get("/api/contacts/carol@acme.test").get_json() == first


def test_the_same_email_may_exist_in_two_tenants(tenant: Tenant, other_tenant: Tenant) -> None:
    mine = _create(tenant, "shared@acme.test")
    theirs = _create(other_tenant, "shared@acme.test")

    assert mine["id"] != theirs["id"]


@pytest.mark.parametrize(("body", "field"), [
    ({}, "email"),
    ({"email": None}, "email"),
    ({"email": "not-an-email"}, "email"),
    ({"email": 42}, "email"),
    ({"email": "a@acme.test", "name": "Alice"}, "name"),
    ({"email": "a@acme.test", "properties": "plan=pro"}, "properties"),
    ({"email": "a@acme.test", "subscribed": "yes"}, "subscribed"),
    ({"email": "a@acme.test", "subscribed": 1}, "subscribed"),
    ({"email": "a@acme.test", "subscribed": None}, "subscribed"),
])
def test_create_rejects_bad_fields(tenant: Tenant, body: dict[str, Any], field: str) -> None:
    error = _error(tenant.post("/api/contacts", json=body), 400)

    assert field in error["details"]
    assert _listed(tenant) == []


@pytest.mark.parametrize(("properties", "key"), [
    ({"address": {"city": "Leeds"}}, "address"),
    ({"tags": ["a", "b"]}, "tags"),
    ({"bio": "x" * 2001}, "bio"),
    ({"k" * 101: 1}, "k" * 101),
])
def test_create_rejects_bad_properties_naming_the_key(tenant: Tenant, properties: dict[str, Any],
                                                       key: str) -> None:
    error = _error(tenant.post("/api/contacts", json={"email": "a@acme.test",
                                                      "properties": properties}), 400)

    assert error["details"] == {"properties": {key: error["details"]["properties"][key]}}


def test_create_accepts_the_limits_exactly(tenant: Tenant) -> None:
    properties = {f"key{i:03d}": "x" * 2000 for i in range(100)}

    contact = _create(tenant, "full@acme.test", properties=properties)

    assert contact["properties"] == properties
    too_many = {**properties, "one-more": 1}
    _error(tenant.post("/api/contacts", json={"email": "b@acme.test", "properties": too_many}),
           400)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[]", b'"alice@acme.test"', b"NaN"])
def test_create_rejects_malformed_json(tenant: Tenant, raw: bytes) -> None:
    response = tenant.post("/api/contacts", data=raw, content_type="application/json")

    _error(response, 400)


def test_create_rejects_a_body_over_the_limit(tenant: Tenant, app: Flask) -> None:
    limit = app.config["SETTINGS"].max_body_bytes
    body = b'{"email": "a@acme.test", "properties": {"x": "' + b"y" * limit + b'"}}'

    _error(tenant.post("/api/contacts", data=body, content_type="application/json"), 413,
           "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(("method", "path"), [
    ("post", "/api/contacts"), ("get", "/api/contacts"), ("post", "/api/contacts/upsert"),
    ("put", "/api/contacts/a@acme.test"), ("get", "/api/contacts/a@acme.test"),
    ("patch", "/api/contacts/a@acme.test"), ("delete", "/api/contacts/a@acme.test"),
])
def test_every_endpoint_needs_an_api_key(client: Any, tenant: Tenant, method: str,
                                         path: str) -> None:
    _create(tenant, "a@acme.test")

    response = getattr(client, method)(path, json={"email": "a@acme.test"},
                                       headers={"Authorization": "Bearer kr_wrong"})

    _error(response, 401, "UNAUTHORISED")
    assert tenant.get("/api/contacts/a@acme.test").status_code == 200


# --- PUT /api/contacts/<email> and POST /api/contacts/upsert --------------------------------


@pytest.mark.parametrize("style", ["put", "upsert"])
def test_upsert_creates_then_merges(tenant: Tenant, style: str) -> None:
    def upsert(email: str, body: dict[str, Any]) -> Any:
        if style == "put":
            return tenant.put(f"/api/contacts/{email}", json=body)
        return tenant.post("/api/contacts/upsert", json={"email": email, **body})

    created = upsert("Dave@Acme.TEST", {"properties": {"plan": "free", "seats": 1, "x": None}})
    assert created.status_code == 201
    first = created.get_json()
    assert first["email"] == "Dave@acme.test"
    assert first["properties"] == {"plan": "free", "seats": 1}
    assert first["subscribed"] is True

    merged = upsert("Dave@acme.test", {"properties": {"plan": "pro", "seats": None, "vip": True},
                                       "subscribed": False})
    assert merged.status_code == 200
    second = merged.get_json()
    assert second["id"] == first["id"]
    assert second["properties"] == {"plan": "pro", "vip": True}
    assert second["unsubscribed"] is True
    assert second["createdAt"] == first["createdAt"]
    assert second["updatedAt"] > first["updatedAt"]

    untouched = upsert("Dave@acme.test", {}).get_json()
    assert untouched["properties"] == {"plan": "pro", "vip": True}
    assert untouched["subscribed"] is False
    assert _contact_rows(tenant, "Dave@acme.test") == 1


def test_upsert_merges_into_a_contact_made_by_create(tenant: Tenant) -> None:
    created = _create(tenant, "erin@acme.test", properties={"plan": "free"})

    response = tenant.post("/api/contacts/upsert",
                           json={"email": "erin@ACME.test", "properties": {"seats": 2}})

    assert response.status_code == 200
    assert response.get_json()["id"] == created["id"]
    assert response.get_json()["properties"] == {"plan": "free", "seats": 2}


def test_put_accepts_a_body_email_matching_after_normalisation(tenant: Tenant) -> None:
    response = tenant.put("/api/contacts/frank@acme.test", json={"email": "frank@ACME.TEST"})

    assert response.status_code == 201
    assert response.get_json()["email"] == "frank@acme.test"


def test_put_rejects_a_body_email_that_differs(tenant: Tenant) -> None:
    error = _error(tenant.put("/api/contacts/frank@acme.test",
                              json={"email": "Frank@acme.test"}), 400)

    assert "email" in error["details"]
    assert _listed(tenant) == []


def test_put_rejects_a_path_that_is_not_an_email(tenant: Tenant) -> None:
    existing = _create(tenant, "gina@acme.test")

    error = _error(tenant.put(f"/api/contacts/{existing['id']}", json={}), 400)

    assert "email" in error["details"]


@pytest.mark.parametrize(("body", "field"), [
    ({"properties": {"address": {"city": "Leeds"}}}, "properties"),
    ({"subscribed": "false"}, "subscribed"),
    ({"nickname": "h"}, "nickname"),
])
def test_upsert_rejects_bad_fields(tenant: Tenant, body: dict[str, Any], field: str) -> None:
    put = _error(tenant.put("/api/contacts/h@acme.test", json=body), 400)
    post = _error(tenant.post("/api/contacts/upsert", json={"email": "h@acme.test", **body}),
                  400)

    assert field in put["details"] and field in post["details"]
    assert _listed(tenant) == []


def test_upsert_needs_an_email(tenant: Tenant) -> None:
    error = _error(tenant.post("/api/contacts/upsert", json={"properties": {"a": 1}}), 400)

    assert "email" in error["details"]


def test_upsert_refuses_to_grow_past_the_property_limit(tenant: Tenant) -> None:
    _create(tenant, "ivy@acme.test", properties={f"k{i}": i for i in range(100)})

    error = _error(tenant.put("/api/contacts/ivy@acme.test", json={"properties": {"new": 1}}),
                   400)
    removing_one_adding_one = tenant.put("/api/contacts/ivy@acme.test",
                                         json={"properties": {"k0": None, "new": 1}})

    assert "properties" in error["details"]
    assert removing_one_adding_one.status_code == 200
    assert len(removing_one_adding_one.get_json()["properties"]) == 100


def _concurrently(app: Flask, tenant: Tenant, calls: int, send: Any) -> list[int]:
    barrier = threading.Barrier(calls)
    statuses: list[int] = []

    def run() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(send(client, tenant.headers).status_code)

    threads = [threading.Thread(target=run) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(statuses)


def test_concurrent_upserts_of_one_email_make_one_contact(app: Flask, tenant: Tenant) -> None:
    statuses = _concurrently(app, tenant, 8, lambda client, headers: client.post(
        "/api/contacts/upsert", headers=headers,
        json={"email": "race@acme.test", "properties": {"n": 1}}))

    assert statuses == [200] * 7 + [201]
    assert _contact_rows(tenant, "race@acme.test") == 1


def test_concurrent_creates_of_one_email_make_one_contact(app: Flask, tenant: Tenant) -> None:
    statuses = _concurrently(app, tenant, 8, lambda client, headers: client.post(
        "/api/contacts", headers=headers, json={"email": "race@acme.test"}))

    assert statuses == [201] + [409] * 7
    assert _contact_rows(tenant, "race@acme.test") == 1


def test_concurrent_merges_keep_every_property(app: Flask, tenant: Tenant) -> None:
    _create(tenant, "merge@acme.test")
    counter = iter(range(100))
    lock = threading.Lock()

    def send(client: Any, headers: dict[str, str]) -> Any:
        with lock:
            key = f"k{next(counter)}"
        return client.patch("/api/contacts/merge@acme.test", headers=headers,
                            json={"properties": {key: True}})

    assert _concurrently(app, tenant, 8, send) == [200] * 8
    properties = tenant.get("/api/contacts/merge@acme.test").get_json()["properties"]
    assert properties == {f"k{i}": True for i in range(8)}


# --- GET /api/contacts ----------------------------------------------------------------------


def test_list_is_newest_first(tenant: Tenant) -> None:
    emails = []
    for i in range(3):
        emails.append(_create(tenant, f"user{i}@acme.test")["email"])
        time.sleep(0.002)  # ids order by millisecond; keep the creations apart

    body = tenant.get("/api/contacts").get_json()

    assert [c["email"] for c in body["data"]] == list(reversed(emails))
    assert body["nextCursor"] is None
    assert set(body["data"][0]) == {"id", "email", "properties", "subscribed", "unsubscribed",
                                    "suppressed", "createdAt", "updatedAt"}


def test_list_pages_through_every_contact_once(tenant: Tenant) -> None:
    ids = sorted((_create(tenant, f"p{i:02d}@acme.test")["id"] for i in range(23)), reverse=True)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "?limit=5" + (f"&cursor={cursor}" if cursor else "")
        body = tenant.get(f"/api/contacts{query}").get_json()
        seen += [c["id"] for c in body["data"]]
        pages += 1
        if pages == 2:
            _create(tenant, "late@acme.test")  # newer than every cursor: must not shift pages
        cursor = body["nextCursor"]
        if cursor is None:
            break

    assert pages == 5
    assert seen == ids


def test_list_default_limit_is_20(tenant: Tenant) -> None:
    for i in range(21):
        _create(tenant, f"d{i}@acme.test")

    body = tenant.get("/api/contacts").get_json()

    assert len(body["data"]) == 20
    assert body["nextCursor"]
    assert len(tenant.get(f"/api/contacts?cursor={body['nextCursor']}").get_json()["data"]) == 1


def test_list_search_is_a_case_insensitive_partial_match(tenant: Tenant) -> None:
    _create(tenant, "Alice.Smith@Example.com")
    _create(tenant, "bob@acme.test")
    _create(tenant, "a_b@acme.test")
    _create(tenant, "axb@acme.test")

    assert [c["email"] for c in _listed(tenant, "?search=SMITH@EXAMPLE")] == [
        "Alice.Smith@example.com"]
    assert {c["email"] for c in _listed(tenant, "?search=acme")} == {
        "bob@acme.test", "a_b@acme.test", "axb@acme.test"}
    # LIKE wildcards in the search text are literal characters.
    assert [c["email"] for c in _listed(tenant, "?search=a_b")] == ["a_b@acme.test"]
    assert _listed(tenant, "?search=%25") == []
    assert len(_listed(tenant, "?search=")) == 4


def test_list_filters_on_suppressed_and_unsubscribed(tenant: Tenant) -> None:
    _create(tenant, "plain@acme.test")
    _create(tenant, "gone@acme.test", subscribed=False)
    _create(tenant, "bounced@acme.test")
    with db.transaction() as session:
        session.execute(update(Contact).where(Contact.email == "bounced@acme.test")
                        .values(suppressed=True))

    def emails(query: str) -> set[str]:
        return {c["email"] for c in _listed(tenant, query)}

    assert emails("?suppressed=true") == {"bounced@acme.test"}
    assert emails("?suppressed=false") == {"plain@acme.test", "gone@acme.test"}
    assert emails("?unsubscribed=true") == {"gone@acme.test"}
    assert emails("?unsubscribed=FALSE") == {"plain@acme.test", "bounced@acme.test"}
    assert emails("?unsubscribed=false&suppressed=false") == {"plain@acme.test"}
    assert emails("?search=gone&unsubscribed=true") == {"gone@acme.test"}


@pytest.mark.parametrize(("query", "field"), [
    ("?suppressed=yes", "suppressed"),
    ("?suppressed=1", "suppressed"),
    ("?unsubscribed=", "unsubscribed"),
    ("?limit=0", "limit"),
    ("?limit=101", "limit"),
    ("?limit=ten", "limit"),
    ("?cursor=not-a-cursor", "cursor"),
    ("?colour=red", "colour"),
])
def test_list_rejects_bad_query_params(tenant: Tenant, query: str, field: str) -> None:
    error = _error(tenant.get(f"/api/contacts{query}"), 400)

    assert field in error["details"]


def test_list_accepts_the_maximum_limit(tenant: Tenant) -> None:
    _create(tenant, "one@acme.test")

    assert len(_listed(tenant, "?limit=100")) == 1


# --- GET / PATCH / DELETE /api/contacts/<id or email> ---------------------------------------


def test_get_by_id_or_email(tenant: Tenant) -> None:
    contact = _create(tenant, "Jane@acme.test", properties={"plan": "pro"})

    assert tenant.get(f"/api/contacts/{contact['id']}").get_json() == contact
    assert tenant.get("/api/contacts/Jane@ACME.test").get_json() == contact
    assert tenant.get("/api/contacts/Jane%40acme.test").get_json() == contact
    _error(tenant.get("/api/contacts/jane@acme.test"), 404, "NOT_FOUND")  # local part kept


@pytest.mark.parametrize("ref", ["cnt_01HZZZZZZZZZZZZZZZZZZZZZZZ", "nobody@acme.test",
                                 "not@an@email"])
def test_unknown_contact_is_404_everywhere(tenant: Tenant, ref: str) -> None:
    _error(tenant.get(f"/api/contacts/{ref}"), 404, "NOT_FOUND")
    _error(tenant.patch(f"/api/contacts/{ref}", json={"properties": {"a": 1}}), 404, "NOT_FOUND")
    _error(tenant.delete(f"/api/contacts/{ref}"), 404, "NOT_FOUND")


def test_other_tenants_cannot_see_or_touch_a_contact(tenant: Tenant, other_tenant: Tenant
                                                     ) -> None:
    contact = _create(tenant, "kate@acme.test", properties={"plan": "pro"})

    for ref in (contact["id"], contact["email"]):
        _error(other_tenant.get(f"/api/contacts/{ref}"), 404, "NOT_FOUND")
        _error(other_tenant.patch(f"/api/contacts/{ref}", json={"properties": {"plan": "x"}}),
               404, "NOT_FOUND")
        _error(other_tenant.delete(f"/api/contacts/{ref}"), 404, "NOT_FOUND")
    assert _listed(other_tenant) == []
    assert _listed(other_tenant, "?search=kate") == []
    assert tenant.get(f"/api/contacts/{contact['id']}").get_json() == contact


def test_upsert_in_another_tenant_makes_its_own_contact(tenant: Tenant,
                                                        other_tenant: Tenant) -> None:
    mine = _create(tenant, "liam@acme.test", properties={"plan": "pro"})

    theirs = other_tenant.put("/api/contacts/liam@acme.test", json={"properties": {"x": 1}})

    assert theirs.status_code == 201
    assert theirs.get_json()["id"] != mine["id"]
    assert tenant.get("/api/contacts/liam@acme.test").get_json() == mine


def test_patch_merges_properties_and_null_removes_a_key(tenant: Tenant) -> None:
    contact = _create(tenant, "mia@acme.test", properties={"plan": "free", "seats": 1})

    response = tenant.patch(f"/api/contacts/{contact['id']}",
                            json={"properties": {"plan": "pro", "seats": None, "nps": 9.5,
                                                 "absent": None}})

    assert response.status_code == 200
    patched = response.get_json()
    assert patched["properties"] == {"plan": "pro", "nps": 9.5}
    assert patched["id"] == contact["id"] and patched["email"] == contact["email"]
    assert patched["createdAt"] == contact["createdAt"]
    assert patched["updatedAt"] > contact["updatedAt"]
    assert tenant.get("/api/contacts/mia@acme.test").get_json() == patched


def test_patch_by_email_toggles_subscribed(tenant: Tenant) -> None:
    _create(tenant, "ned@acme.test", properties={"plan": "pro"})

    off = tenant.patch("/api/contacts/ned@ACME.test", json={"subscribed": False}).get_json()
    on = tenant.patch("/api/contacts/ned@acme.test", json={"subscribed": True}).get_json()

    assert (off["subscribed"], off["unsubscribed"]) == (False, True)
    assert (on["subscribed"], on["unsubscribed"]) == (True, False)
    assert on["properties"] == {"plan": "pro"}
    assert on["updatedAt"] > off["updatedAt"]


@pytest.mark.parametrize(("body", "field"), [
    ({"email": "new@acme.test"}, "email"),
    ({"subscribed": "no"}, "subscribed"),
    ({"properties": {"nested": {"a": 1}}}, "properties"),
    ({"properties": [1]}, "properties"),
    ({"properties": {"tags": ["a"]}}, "properties"),
])
def test_patch_rejects_bad_fields(tenant: Tenant, body: dict[str, Any], field: str) -> None:
    contact = _create(tenant, "olga@acme.test", properties={"plan": "pro"})

    error = _error(tenant.patch("/api/contacts/olga@acme.test", json=body), 400)

    assert field in error["details"]
    assert tenant.get("/api/contacts/olga@acme.test").get_json() == contact


def test_patch_rejects_malformed_json(tenant: Tenant) -> None:
    _create(tenant, "pat@acme.test")

    _error(tenant.patch("/api/contacts/pat@acme.test", data=b"{",
                        content_type="application/json"), 400)


def test_delete_removes_the_contact_and_its_events(tenant: Tenant, other_tenant: Tenant) -> None:
    doomed = _create(tenant, "quinn@acme.test")
    _create(tenant, "rita@acme.test")
    for name in ("signed_up", "purchase.completed"):
        _store_event(tenant, "quinn@acme.test", name)
    _store_event(tenant, "quinn@acme.test", "old", archived=True)
    kept = {_store_event(tenant, "rita@acme.test", "signed_up"),
            _store_event(tenant, "rita@acme.test", "old", archived=True)}
    theirs = _store_event(other_tenant, "quinn@acme.test", "signed_up")
    assert len(_stored_event_ids(tenant)) == 5

    response = tenant.delete(f"/api/contacts/{doomed['id']}")

    assert response.status_code == 204
    assert response.data == b""
    _error(tenant.get(f"/api/contacts/{doomed['id']}"), 404, "NOT_FOUND")
    _error(tenant.delete(f"/api/contacts/{doomed['id']}"), 404, "NOT_FOUND")
    assert _stored_event_ids(tenant) == kept
    assert _stored_event_ids(other_tenant) == {theirs}
    assert [c["email"] for c in _listed(tenant)] == ["rita@acme.test"]
    assert other_tenant.get("/api/contacts/quinn@acme.test").status_code == 200


def test_delete_by_email_then_the_email_can_be_created_again(tenant: Tenant) -> None:
    first = _create(tenant, "sam@acme.test", properties={"plan": "pro"})

    assert tenant.delete("/api/contacts/sam@ACME.test").status_code == 204
    again = _create(tenant, "sam@acme.test")

    assert again["id"] != first["id"]
    assert again["properties"] == {}


# --- contacts made by events, and the OpenAPI document --------------------------------------


@pytest.mark.worker
@pytest.mark.usefixtures("worker")
def test_a_contact_created_by_an_event_is_readable(tenant: Tenant) -> None:
    accepted = tenant.post("/api/events", json={"email": "Tess@Acme.TEST", "event": "signed_up",
                                                "properties": {"plan": "pro"}})
    assert accepted.status_code == 202

    response = wait_for(lambda: (r := tenant.get("/api/contacts/Tess@acme.test")).status_code
                        == 200 and r, message="the auto-created contact")

    contact = response.get_json()
    assert contact["email"] == "Tess@acme.test"
    assert contact["properties"] == {}
    assert contact["subscribed"] is True and contact["suppressed"] is False
    assert [c["id"] for c in _listed(tenant)] == [contact["id"]]
    event = wait_for(lambda: tenant.get(f"/api/events/{accepted.get_json()['id']}")
                     .get_json().get("contactId"), message="the event")
    assert event == contact["id"]


@pytest.mark.worker
@pytest.mark.usefixtures("worker")
def test_deleting_a_contact_removes_events_tracked_through_the_api(tenant: Tenant) -> None:
    ids = [tenant.post("/api/events", json={"email": "uma@acme.test", "event": f"e{i}"})
           .get_json()["id"] for i in range(3)]
    wait_for(lambda: _stored_event_ids(tenant) == set(ids), message="3 stored events")

    assert tenant.delete("/api/contacts/uma@acme.test").status_code == 204

    assert _stored_event_ids(tenant) == set()
    assert tenant.get("/api/events").get_json()["data"] == []
    for event_id in ids:
        _error(tenant.get(f"/api/events/{event_id}"), 404, "NOT_FOUND")


def test_openapi_documents_the_contact_operations(client: Any) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]

    assert {"get", "post"} <= set(paths["/contacts"])
    assert "post" in paths["/contacts/upsert"]
    assert {"get", "put", "patch", "delete"} <= set(paths["/contacts/{id}"])
    assert "201" in paths["/contacts"]["post"]["responses"]
    assert "204" in paths["/contacts/{id}"]["delete"]["responses"]


# --- deleting a contact that is in sequences and has e-mail -----------------------------------

DRIP = """
trigger:
  api: true
steps:
  - send: welcome
  - delay: 2s
  - send: tips
"""

WAITING = """
trigger:
  event: signed_up
steps:
  - action: wait
    event: plan.chosen
    timeout: 1d
  - send: tips
"""


def _rows_quoting(address: str) -> list[str]:
    """Every stored row, of the tables that hold personal data, that still contains `address`."""
    found = []
    with db.transaction() as session:
        for model in (Contact, Event, ArchivedEvent, Send, Enrolment):
            for row in session.scalars(select(model)):
                values = {column.key: getattr(row, column.key)
                          for column in model.__mapper__.column_attrs}
                if address.lower() in json.dumps(values, default=str).lower():
                    found.append(f"{model.__tablename__}: {values}")
    return found


@pytest.mark.worker
def test_deleting_a_contact_ends_its_enrolments_and_cancels_its_unsent_email(
        tenant: Tenant, worker: WorkerProcess) -> None:
    address = "Ann.Lee@example.com"
    tenant.put("/api/templates/welcome", json={
        "name": "Welcome", "subject": "Welcome, {{ contact.email }}",
        "html": '<a href="https://acme.test/prefs?who={{ contact.email }}">prefs</a> '
                '<a href="https://acme.test/blog">blog</a>'})
    active_sequence(tenant, "drip", DRIP, ("tips",))
    active_sequence(tenant, "waiting", WAITING, ())
    tenant.post("/api/events", json={"email": address, "event": "signed_up"})
    enrolled = tenant.post("/api/sequences/drip/enrolments", json={"email": address})
    assert enrolled.status_code == 201, enrolled.get_json()
    contact_id = enrolled.get_json()["contactId"]
    wait_for(lambda: [s["status"] for s in tenant.get("/api/sends").get_json()["data"]]
             == ["sent"], message="the welcome e-mail")
    wait_for(lambda: len(tenant.get("/api/scheduled").get_json()["data"]) == 2,
             message="the pending delay and wait")
    with db.transaction() as session:  # a transactional e-mail waiting for its retry
        waiting = sending.create_send(session, tenant_id=tenant.id, contact_id=contact_id,
                                      email=address, template_id="welcome",
                                      variables={"coupon": "ANN-42"})
        waiting.attempts, waiting.error = 1, f"Attempt 1 of 5: 451 <{address.lower()}> busy"

    assert tenant.delete(f"/api/contacts/{address}").status_code == 204

    listed = [tenant.get(f"/api/sequences/{seq}/enrolments").get_json()["data"]
              for seq in ("drip", "waiting")]
    assert [[(e["status"], e["exitReason"], e["nextStepAt"]) for e in page]
            for page in listed] == [[("exited", "contactDeleted", None)]] * 2
    assert tenant.get("/api/scheduled").get_json()["data"] == []
    cancelled = tenant.get(f"/api/sends/{waiting.id}").get_json()
    assert (cancelled["status"], cancelled["error"]) == (
        "rejected", "Cancelled: the contact was deleted.")
    deliver.apply_async(args=(waiting.id,))  # its retry arrives anyway
    wait_for(lambda: f"send_not_claimed {waiting.id}" in worker.log(),
             message="the late task to find nothing to send")
    time.sleep(2.5)  # past the delay: the next step must not run
    sends = tenant.get("/api/sends").get_json()["data"]
    assert [(s["templateId"], s["status"]) for s in sends] == [
        ("welcome", "rejected"), ("welcome", "sent")]
    assert [(s["email"], s["subject"]) for s in sends] == [("", None)] * 2
    assert tenant.get(f"/api/contacts/{address}").status_code == 404  # not brought back
    assert _rows_quoting(address) == []
    with db.transaction() as session:
        sent = session.scalars(select(Send).where(Send.status == "sent")).one()
        assert sent.links[1:] == ["https://acme.test/blog"]  # only the link quoting the address
        assert sent.variables == {} and sent.context == {}   # is gone


def test_the_guides_unsubscribed_flag_is_accepted(tenant: Tenant) -> None:
    created = tenant.post("/api/contacts", json={"email": "u@acme.test", "unsubscribed": True})
    assert created.status_code == 201
    assert (created.get_json()["subscribed"], created.get_json()["unsubscribed"]) == (False, True)
    patched = tenant.patch("/api/contacts/u@acme.test", json={"unsubscribed": False})
    assert patched.get_json()["subscribed"] is True
    clash = tenant.patch("/api/contacts/u@acme.test",
                         json={"unsubscribed": True, "subscribed": True})
    assert clash.status_code == 400 and "unsubscribed" in clash.get_json()["error"]["details"]
    wrong = tenant.put("/api/contacts/u@acme.test", json={"unsubscribed": "yes"})
    assert wrong.status_code == 400
    assert tenant.get("/api/contacts/u@acme.test").get_json()["subscribed"] is True

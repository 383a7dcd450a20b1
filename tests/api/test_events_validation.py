"""POST /api/events and GET /api/events: what is accepted, what is refused, and how."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest

from app import db
from app.services import ingest
from tests.conftest import Tenant

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ACCEPTED_FIELDS = {"id", "event", "email", "properties", "timestamp", "createdAt", "status"}


def _track(tenant: Tenant, body: Any, path: str = "/api/events") -> Any:
    return tenant.post(path, json=body)


def _refused(response: Any, field: str) -> dict[str, Any]:
    """Assert a 400 VALIDATION_ERROR whose details name `field`; return the error."""
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in error["details"], error
    assert error["message"]
    return error


def _contact(tenant: Tenant, email: str) -> str:
    with db.transaction() as session:
        return ingest.upsert_contacts(session, tenant_id=tenant.id, emails=[email])[email]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- the 202 answer -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/events", "/events"])
def test_accepted_answer_has_the_contract_fields(tenant: Tenant, path: str) -> None:
    response = _track(tenant, {"email": "ann@acme.test", "event": "signed.up",
                               "properties": {"plan": "pro", "seats": 3, "trial": True,
                                              "score": 1.5}}, path)

    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == ACCEPTED_FIELDS
    assert body["status"] == "queued"
    assert body["id"].startswith("evt_")
    assert body["event"] == "signed.up"
    assert body["email"] == "ann@acme.test"
    assert body["properties"] == {"plan": "pro", "seats": 3, "trial": True, "score": 1.5}
    assert ISO_MS.match(body["timestamp"]) and ISO_MS.match(body["createdAt"])
    assert body["timestamp"] == body["createdAt"]  # no timestamp given: "now"


def test_properties_are_optional(tenant: Tenant) -> None:
    response = _track(tenant, {"email": "ann@acme.test", "event": "login"})

    assert response.status_code == 202
    assert response.get_json()["properties"] == {}


def test_null_optional_fields_count_as_not_given(tenant: Tenant) -> None:
    response = _track(tenant, {"email": "ann@acme.test", "event": "login", "properties": None,
                               "timestamp": None, "contactId": None})

    assert response.status_code == 202
    assert response.get_json()["properties"] == {}


# --- event names ----------------------------------------------------------------------------

def test_name_is_an_alias_of_event(tenant: Tenant) -> None:
    response = _track(tenant, {"email": "ann@acme.test", "name": "trial.started"})

    assert response.status_code == 202
    assert response.get_json()["event"] == "trial.started"


def test_event_wins_over_name(tenant: Tenant) -> None:
    response = _track(tenant, {"email": "ann@acme.test", "event": "a", "name": "b"})

    assert response.get_json()["event"] == "a"


@pytest.mark.parametrize("name", ["x", "e" * 200, "  Purchase Completed  ", "Ünïcode ✓",
                                  "Email.sent", "email"])
def test_names_are_kept_exactly_as_sent(tenant: Tenant, name: str) -> None:
    response = _track(tenant, {"email": "ann@acme.test", "event": name})

    assert response.status_code == 202
    assert response.get_json()["event"] == name


@pytest.mark.parametrize("body", [{"event": ""}, {"event": "e" * 201}, {"event": 42},
                                  {"event": None}, {"event": ["a"]}])
def test_bad_event_names_are_refused(tenant: Tenant, body: dict[str, Any]) -> None:
    _refused(_track(tenant, {"email": "ann@acme.test", **body}), "event")


def test_bad_alias_is_refused_naming_it(tenant: Tenant) -> None:
    _refused(_track(tenant, {"email": "ann@acme.test", "name": "n" * 201}), "name")


def test_missing_event_is_refused(tenant: Tenant) -> None:
    _refused(_track(tenant, {"email": "ann@acme.test"}), "event")


@pytest.mark.parametrize("field", ["event", "name"])
@pytest.mark.parametrize("name", ["email.sent", "email.opened", "email.custom"])
def test_system_event_names_are_refused(tenant: Tenant, field: str, name: str) -> None:
    error = _refused(_track(tenant, {"email": "ann@acme.test", field: name}), field)

    assert "system event" in error["message"]


def test_every_problem_is_named_at_once(tenant: Tenant) -> None:
    response = _track(tenant, {"email": "nope", "properties": {"a": [1]}})

    error = _refused(response, "email")
    assert {"email", "event", "properties"} <= set(error["details"])


# --- who: email and contactId ---------------------------------------------------------------

def test_email_domain_is_lower_cased_and_local_part_kept(tenant: Tenant) -> None:
    response = _track(tenant, {"email": "Alice.Smith@Example.COM", "event": "x"})

    assert response.get_json()["email"] == "Alice.Smith@example.com"


def test_email_syntax_only_no_dns(tenant: Tenant) -> None:
    response = _track(tenant, {"email": "someone@no-such-domain-for-kraiter.test",
                               "event": "x"})

    assert response.status_code == 202


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@b.com", "a@b", "a b@c.com", "",
                                   "a@localhost", 42, "x" * 320 + "@a.com"])
def test_bad_emails_are_refused(tenant: Tenant, email: Any) -> None:
    _refused(_track(tenant, {"email": email, "event": "x"}), "email")


def test_neither_email_nor_contact_id_is_refused(tenant: Tenant) -> None:
    _refused(_track(tenant, {"event": "x"}), "email")


def test_contact_id_identifies_the_contact(tenant: Tenant) -> None:
    contact_id = _contact(tenant, "known@acme.test")

    response = _track(tenant, {"contactId": contact_id, "event": "x"})

    assert response.status_code == 202
    assert response.get_json()["email"] == "known@acme.test"


def test_contact_id_wins_over_email(tenant: Tenant) -> None:
    contact_id = _contact(tenant, "known@acme.test")

    response = _track(tenant, {"contactId": contact_id, "email": "other@acme.test",
                               "event": "x"})

    assert response.status_code == 202
    assert response.get_json()["email"] == "known@acme.test"


@pytest.mark.parametrize("contact_id", ["cnt_01J0000000000000000000000", "x" * 100])
def test_unknown_contact_id_is_404(tenant: Tenant, contact_id: str) -> None:
    response = _track(tenant, {"contactId": contact_id, "email": "a@acme.test", "event": "x"})

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"


def test_another_tenants_contact_id_is_404(tenant: Tenant, other_tenant: Tenant) -> None:
    theirs = _contact(other_tenant, "secret@globex.test")

    response = _track(tenant, {"contactId": theirs, "event": "x"})

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"
    assert "secret@globex.test" not in response.get_data(as_text=True)


# --- properties -----------------------------------------------------------------------------

@pytest.mark.parametrize("value", [{"nested": 1}, [1, 2], None, []])
def test_non_flat_property_values_are_refused_naming_the_key(tenant: Tenant, value: Any) -> None:
    error = _refused(_track(tenant, {"email": "a@acme.test", "event": "x",
                                     "properties": {"ok": 1, "bad": value}}), "properties")

    assert set(error["details"]["properties"]) == {"bad"}
    assert "bad" in error["message"]


@pytest.mark.parametrize("properties", [[], "flat", 3])
def test_properties_must_be_an_object(tenant: Tenant, properties: Any) -> None:
    _refused(_track(tenant, {"email": "a@acme.test", "event": "x", "properties": properties}),
             "properties")


def test_property_limits_are_inclusive(tenant: Tenant) -> None:
    properties = {f"k{i:03d}": i for i in range(99)}
    properties["k" * 100] = "v" * 2000

    response = _track(tenant, {"email": "a@acme.test", "event": "x", "properties": properties})

    assert response.status_code == 202
    assert response.get_json()["properties"] == properties


@pytest.mark.parametrize("properties", [
    {f"k{i}": i for i in range(101)},
    {"k" * 101: 1},
    {"": 1},
    {"long": "v" * 2001},
])
def test_property_limits_are_enforced(tenant: Tenant, properties: dict[str, Any]) -> None:
    _refused(_track(tenant, {"email": "a@acme.test", "event": "x", "properties": properties}),
             "properties")


# --- timestamps -----------------------------------------------------------------------------

def test_back_dated_timestamp_is_kept(tenant: Tenant) -> None:
    response = _track(tenant, {"email": "a@acme.test", "event": "x",
                               "timestamp": "2020-02-29T23:59:59.123Z"})

    assert response.status_code == 202
    assert response.get_json()["timestamp"] == "2020-02-29T23:59:59.123Z"


@pytest.mark.parametrize(("sent", "answered"), [
    ("2025-09-15T12:30:00+02:00", "2025-09-15T10:30:00.000Z"),
    ("2025-09-15T05:30:00.5-05:00", "2025-09-15T10:30:00.500Z"),
    ("2025-09-15T10:30:00.123456Z", "2025-09-15T10:30:00.123Z"),
    ("2025-09-15T10:30:00", "2025-09-15T10:30:00.000Z"),
])
def test_timestamps_are_converted_to_utc_milliseconds(tenant: Tenant, sent: str,
                                                      answered: str) -> None:
    response = _track(tenant, {"email": "a@acme.test", "event": "x", "timestamp": sent})

    assert response.status_code == 202
    assert response.get_json()["timestamp"] == answered


@pytest.mark.parametrize("timestamp", ["yesterday", "2025-13-01T00:00:00Z", "", 1726395000,
                                       "0001-01-01T00:00:00+01:00", "0999-01-01T00:00:00Z",
                                       True])
def test_bad_timestamps_are_refused(tenant: Tenant, timestamp: Any) -> None:
    _refused(_track(tenant, {"email": "a@acme.test", "event": "x", "timestamp": timestamp}),
             "timestamp")


def test_slightly_future_timestamp_is_accepted(tenant: Tenant) -> None:
    soon = datetime.now(UTC) + timedelta(hours=23)

    response = _track(tenant, {"email": "a@acme.test", "event": "x", "timestamp": _iso(soon)})

    assert response.status_code == 202


def test_timestamp_more_than_a_day_ahead_is_refused(tenant: Tenant) -> None:
    later = datetime.now(UTC) + timedelta(days=1, minutes=5)

    _refused(_track(tenant, {"email": "a@acme.test", "event": "x", "timestamp": _iso(later)}),
             "timestamp")


# --- the body itself ------------------------------------------------------------------------

def test_unknown_fields_are_refused(tenant: Tenant) -> None:
    error = _refused(_track(tenant, {"email": "a@acme.test", "event": "x", "propertys": {}}),
                     "propertys")

    assert "propertys" in error["message"]


@pytest.mark.parametrize("raw", [b"[]", b'"event"', b"null", b"42", b"{", b"", b"   ",
                                 b'{"email": "a@acme.test", "event": "x",}',
                                 b'{"email": "a@acme.test", "event": "x", '
                                 b'"properties": {"n": NaN}}',
                                 b'{"email": "a@acme.test", "event": "x", '
                                 b'"properties": {"n": Infinity}}',
                                 b"\xff\xfe{}"])
def test_bodies_that_are_not_a_json_object_are_refused(tenant: Tenant, raw: bytes) -> None:
    response = tenant.post("/api/events", data=raw, content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"


def test_deeply_nested_body_is_400_not_500(tenant: Tenant) -> None:
    response = tenant.post("/api/events", data=b"[" * 100_000, content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("number", [b"1e400", b"-1e999"])
def test_numbers_that_overflow_to_infinity_are_refused(tenant: Tenant, number: bytes) -> None:
    raw = b'{"email": "a@acme.test", "event": "x", "properties": {"n": ' + number + b"}}"

    response = tenant.post("/api/events", data=raw, content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"


# JSON can carry these, the database cannot store them; one accepted would sink its whole batch
# in the worker.
@pytest.mark.parametrize(("raw", "field"), [
    (b'{"email": "a@acme.test", "event": "x\\u0000y"}', "event"),
    (b'{"email": "a@acme.test", "name": "x\\ud800y"}', "name"),
    (b'{"email": "a@acme.test", "event": "x", "properties": {"k\\u0000": 1}}', "properties"),
    (b'{"email": "a@acme.test", "event": "x", "properties": {"k": "\\udfff"}}', "properties"),
    (b'{"email": "a\\u0000@acme.test", "event": "x"}', "email"),
    (b'{"contactId": "cnt_\\u0000", "event": "x"}', "contactId"),
])
def test_unstorable_text_is_refused(tenant: Tenant, raw: bytes, field: str) -> None:
    response = tenant.post("/api/events", data=raw, content_type="application/json")

    _refused(response, field)


def test_big_integers_and_unicode_are_kept(tenant: Tenant) -> None:
    properties = {"big": 10**30, "neg": -5, "emoji": "🎉", "ключ": "значение"}

    response = _track(tenant, {"email": "a@acme.test", "event": "é🎉", "properties": properties})

    assert response.status_code == 202
    assert response.get_json()["properties"] == properties


def test_json_is_read_whatever_the_content_type(tenant: Tenant) -> None:
    raw = json.dumps({"email": "a@acme.test", "event": "x"})

    response = tenant.post("/api/events", data=raw, content_type="text/plain")

    assert response.status_code == 202


def test_body_over_256_kib_is_413(tenant: Tenant) -> None:
    properties = {f"k{i}": "v" * 1990 for i in range(100)}
    raw = json.dumps({"email": "a@acme.test", "event": "x", "properties": properties,
                      "pad": "p" * 70_000})
    assert len(raw) > 256 * 1024

    response = tenant.post("/api/events", data=raw, content_type="application/json")

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_body_just_under_256_kib_is_read(tenant: Tenant) -> None:
    properties = {f"k{i}": "v" * 1990 for i in range(100)}
    raw = json.dumps({"email": "a@acme.test", "event": "x", "properties": properties})
    raw = raw[:-1] + " " * (256 * 1024 - len(raw)) + "}"

    response = tenant.post("/api/events", data=raw, content_type="application/json")

    assert response.status_code == 202


def test_huge_body_is_413_envelope(tenant: Tenant) -> None:
    response = tenant.post("/api/events", data=b"{" + b" " * (5 * 1024 * 1024) + b"}",
                           content_type="application/json")

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


# --- GET /api/events query ------------------------------------------------------------------

def _cursor(values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
    ("limit=1.5", "limit"),
    ("cursor=garbage!", "cursor"), ("cursor=" + _cursor([1, 2]), "cursor"),
    ("cursor=" + _cursor({"t": "not a time", "i": "evt_1"}), "cursor"),
    ("cursor=" + _cursor({"t": "2025-01-01T00:00:00.000Z"}), "cursor"),
    ("since=yesterday", "since"), ("until=2025-02-30", "until"),
    ("archived=maybe", "archived"), ("email=not-an-email", "email"),
    ("event=" + "e" * 201, "event"), ("colour=red", "colour"),
    ("event=a%00b", "event"), ("contactId=cnt%00", "contactId"),
    ("cursor=" + _cursor({"t": "2025-01-01T00:00:00.000Z", "i": "evt_\u0000"}), "cursor"),
    ("cursor=" + _cursor({"t": "2025-01-01T00:00:00.000Z", "i": "evt_\ud800"}), "cursor"),
])
def test_bad_list_queries_are_refused(tenant: Tenant, query: str, field: str) -> None:
    _refused(tenant.get(f"/api/events?{query}"), field)


@pytest.mark.parametrize("query", [
    "limit=1", "limit=100", "archived=true", "archived=false",
    "since=2025-01-01T00:00:00Z&until=2025-02-01T00:00:00%2B01:00",
    "email=&event=&cursor=&contactId=&limit=", "email=nobody@acme.test", "event=x",
])
def test_good_list_queries_answer_a_page(tenant: Tenant, query: str) -> None:
    response = tenant.get(f"/api/events?{query}")

    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"data": [], "nextCursor": None}


def test_list_filter_on_unknown_contact_id_is_404(tenant: Tenant) -> None:
    response = tenant.get("/api/events?contactId=cnt_nobody")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"


# --- another tenant's events ----------------------------------------------------------------

def _store(tenant: Tenant, email: str, name: str) -> str:
    with db.transaction() as session:
        message = ingest.accept_event(session, tenant_id=tenant.id,
                                      data={"email": email, "event": name, "properties": {}})
        ingest.store_events(session, messages=[{**message}])
    return str(message["id"])


def test_another_tenants_event_is_404(tenant: Tenant, other_tenant: Tenant) -> None:
    theirs = _store(other_tenant, "secret@globex.test", "secret.event")
    mine = _store(tenant, "me@acme.test", "mine")

    assert other_tenant.get(f"/api/events/{theirs}").status_code == 200
    response = tenant.get(f"/api/events/{theirs}")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"
    assert tenant.get(f"/events/{theirs}").status_code == 404
    listed = tenant.get("/api/events").get_json()["data"]
    assert [event["id"] for event in listed] == [mine]
    assert tenant.get(f"/api/events?contactId={_contact(other_tenant, 'secret@globex.test')}"
                      ).status_code == 404


@pytest.mark.parametrize("event_id", ["evt_nothing", "evt%00x", "%F0%9F%8E%89"])
def test_unknown_event_id_is_404(tenant: Tenant, event_id: str) -> None:
    response = tenant.get(f"/api/events/{event_id}")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"


def test_stored_event_item_shape(tenant: Tenant) -> None:
    event_id = _store(tenant, "me@acme.test", "Signed Up")

    item = tenant.get(f"/api/events/{event_id}").get_json()

    assert {"id", "event", "contactId", "email", "properties", "timestamp", "createdAt",
            "source"} <= set(item)
    assert item["event"] == "Signed Up"
    assert item["source"] == "api"
    assert ISO_MS.match(item["timestamp"]) and ISO_MS.match(item["createdAt"])

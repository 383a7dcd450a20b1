"""Sequences over HTTP (contract §5): upsert and versions, lifecycle, enrolments, scheduled."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import insert

from app import db
from app.ids import new_id
from app.models import Enrolment
from app.models import Send
from app.services import enrolments
from app.services import lifecycle
from app.timeutil import utcnow
from tests.conftest import Tenant
from tests.support import backend
from tests.support import wait_for

SEED = """
trigger:
  event: purchase.completed
steps:
  - action: email
    template: order-confirmation
  - action: delay
    duration: 3d
  - action: email
    template: review-request
exitConditions:
  - event: purchase.refunded
"""

API_ONLY = """
trigger:
  api: true
reenrol: never
steps:
  - send: welcome
  - delay: 1d
  - send: tips
"""


def put_template(tenant: Tenant, template_id: str) -> None:
    response = tenant.put(f"/api/templates/{template_id}",
                          json={"name": template_id, "subject": "Hi", "html": "<p>Hi</p>"})
    assert response.status_code in (200, 201), response.get_json()


def put_sequence(tenant: Tenant, sequence_id: str, definition: str, **extra: Any) -> Any:
    return tenant.put(f"/api/sequences/{sequence_id}",
                      json={"name": sequence_id.title(), "definition": definition, **extra})


def active_sequence(tenant: Tenant, sequence_id: str, definition: str,
                    templates: tuple[str, ...]) -> None:
    for template in templates:
        put_template(tenant, template)
    assert put_sequence(tenant, sequence_id, definition).status_code in (200, 201)
    assert tenant.post(f"/api/sequences/{sequence_id}/activate").status_code == 200


def test_put_creates_a_draft_then_versions_changes(tenant: Tenant) -> None:
    created = put_sequence(tenant, "post-purchase", SEED)
    assert created.status_code == 201
    body = created.get_json()
    assert body["id"] == "post-purchase" and body["status"] == "draft"
    assert body["definition"] == SEED and body["version"] == 1
    assert body["triggers"] == [{"event": "purchase.completed"}]
    assert body["createdAt"].endswith("Z") and body["updatedAt"].endswith("Z")

    again = put_sequence(tenant, "post-purchase", SEED)
    assert again.status_code == 200
    assert again.get_json()["version"] == 1
    assert again.get_json()["updatedAt"] == body["updatedAt"]

    changed = put_sequence(tenant, "post-purchase", SEED.replace("3d", "2d"))
    assert changed.status_code == 200 and changed.get_json()["version"] == 2
    fetched = tenant.get("/api/sequences/post-purchase").get_json()
    assert fetched["version"] == 2 and "2d" in fetched["definition"]


def test_request_triggers_replace_the_definitions(tenant: Tenant) -> None:
    response = put_sequence(tenant, "short", "steps:\n  - send: a\n  - delay: 1d\n",
                            triggers=[{"event": "signed.up"}])
    assert response.status_code == 201
    assert response.get_json()["triggers"] == [{"event": "signed.up"}]
    json_form = ('{"steps": [{"type": "email", "templateId": "a"}, '
                 '{"type": "delay", "duration": "2d"}]}')
    sdk = put_sequence(tenant, "sdk", json_form,
                       triggers=[{"type": "event", "eventName": "user.created"}])
    assert sdk.status_code == 201 and sdk.get_json()["triggers"] == [{"event": "user.created"}]


def test_invalid_definitions_name_the_step_and_field(tenant: Tenant) -> None:
    response = put_sequence(tenant, "bad", "steps:\n  - action: delay\n    duration: 3 days\n")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "steps[0].duration" in str(error["details"])
    assert put_sequence(tenant, "bad", "steps: [").status_code == 400
    missing = tenant.put("/api/sequences/bad", json={"name": "x"})
    assert missing.status_code == 400 and "definition" in missing.get_json()["error"]["details"]
    assert tenant.get("/api/sequences/bad").status_code == 404


def test_activation_needs_every_template(tenant: Tenant) -> None:
    put_sequence(tenant, "post-purchase", SEED)
    put_template(tenant, "order-confirmation")
    refused = tenant.post("/api/sequences/post-purchase/activate")
    assert refused.status_code == 422
    assert refused.get_json()["error"]["code"] == "UNPROCESSABLE_ENTITY"
    assert "review-request" in refused.get_json()["error"]["message"]
    put_template(tenant, "review-request")
    activated = tenant.post("/api/sequences/post-purchase/activate")
    assert activated.status_code == 200 and activated.get_json()["status"] == "active"


def test_lifecycle_transitions(tenant: Tenant) -> None:
    put_sequence(tenant, "seq", SEED)
    assert tenant.post("/api/sequences/seq/resume").status_code == 422  # a draft
    assert tenant.post("/api/sequences/seq/pause").status_code == 422
    active_sequence(tenant, "seq", SEED, ("order-confirmation", "review-request"))
    assert tenant.post("/api/sequences/seq/activate").status_code == 200  # already: no-op
    assert tenant.post("/api/sequences/seq/pause").get_json()["status"] == "paused"
    assert tenant.post("/api/sequences/seq/activate").status_code == 422  # resume it instead
    assert tenant.post("/api/sequences/seq/resume").get_json()["status"] == "active"
    assert tenant.post("/api/sequences/seq/archive").get_json()["status"] == "archived"
    assert tenant.post("/api/sequences/seq/resume").status_code == 422
    assert tenant.post("/api/sequences/nope/pause").status_code == 404


def test_list_by_status_and_delete(tenant: Tenant, other_tenant: Tenant) -> None:
    active_sequence(tenant, "a", SEED, ("order-confirmation", "review-request"))
    put_sequence(tenant, "b", SEED)
    assert [s["id"] for s in tenant.get("/api/sequences").get_json()["data"]] == ["a", "b"]
    assert [s["id"] for s in tenant.get("/api/sequences?status=draft").get_json()["data"]] == [
        "b"]
    assert tenant.get("/api/sequences?status=nope").status_code == 400
    assert other_tenant.get("/api/sequences/a").status_code == 404
    assert other_tenant.get("/api/sequences").get_json()["data"] == []
    enrolled = tenant.post("/api/sequences/a/enrolments", json={"email": "ann@example.com"})
    assert enrolled.status_code == 201
    assert tenant.delete("/api/sequences/a").status_code == 204
    assert tenant.get("/api/sequences/a").status_code == 404
    mine = tenant.get("/api/contacts/ann@example.com/enrolments").get_json()["data"]
    assert [(e["status"], e["exitReason"]) for e in mine] == [("exited", "sequenceDeleted")]


def test_manual_enrolment_sends_the_first_step(tenant: Tenant) -> None:
    active_sequence(tenant, "onboarding", API_ONLY, ("welcome", "tips"))
    response = tenant.post("/api/sequences/onboarding/enrolments",
                           json={"email": "ann@example.com"})
    assert response.status_code == 201
    enrolment = response.get_json()
    assert enrolment["id"].startswith("enr_") and enrolment["sequenceId"] == "onboarding"
    assert enrolment["status"] == "active" and enrolment["currentStep"] == 2
    assert enrolment["nextStepAt"] is not None and enrolment["exitReason"] is None
    with db.transaction() as session:
        sends = session.query(Send).all()
        assert [(s.template_id, s.source, s.source_id, s.step_index) for s in sends] == [
            ("welcome", "sequence", "onboarding", 0)]
    # reenrol: never
    again = tenant.post("/api/sequences/onboarding/enrolments", json={"email": "ann@example.com"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "CONFLICT"
    listed = tenant.get("/api/sequences/onboarding/enrolments?status=active").get_json()
    assert [e["id"] for e in listed["data"]] == [enrolment["id"]]
    by_contact = tenant.get(f"/api/contacts/{enrolment['contactId']}/enrolments").get_json()
    assert [e["id"] for e in by_contact["data"]] == [enrolment["id"]]


def test_only_active_sequences_enrol(tenant: Tenant) -> None:
    put_sequence(tenant, "draft", API_ONLY)
    response = tenant.post("/api/sequences/draft/enrolments", json={"email": "a@example.com"})
    assert response.status_code == 422
    assert tenant.post("/api/sequences/none/enrolments",
                       json={"email": "a@example.com"}).status_code == 404
    active_sequence(tenant, "s", API_ONLY, ("welcome", "tips"))
    assert tenant.post("/api/sequences/s/enrolments", json={}).status_code == 400
    assert tenant.post("/api/sequences/s/enrolments",
                       json={"contactId": "cnt_nope"}).status_code == 404


def test_reenrol_after_completion_waits_for_the_active_one(tenant: Tenant) -> None:
    active_sequence(tenant, "s", API_ONLY.replace("never", "afterCompletion"),
                    ("welcome", "tips"))
    first = tenant.post("/api/sequences/s/enrolments", json={"email": "a@example.com"})
    assert tenant.post("/api/sequences/s/enrolments",
                       json={"email": "a@example.com"}).status_code == 409
    exited = tenant.delete(f"/api/sequences/s/enrolments/{first.get_json()['id']}")
    assert exited.status_code == 200
    assert exited.get_json()["status"] == "exited" and exited.get_json()["exitReason"] == "manual"
    assert exited.get_json()["nextStepAt"] is None
    assert tenant.post("/api/sequences/s/enrolments",
                       json={"email": "a@example.com"}).status_code == 201
    always = API_ONLY.replace("never", "always")
    active_sequence(tenant, "t", always, ())
    for _ in range(2):
        assert tenant.post("/api/sequences/t/enrolments",
                           json={"email": "b@example.com"}).status_code == 201


def test_unsubscribed_contacts_exit_with_a_reason(tenant: Tenant) -> None:
    active_sequence(tenant, "s", API_ONLY, ("welcome", "tips"))
    tenant.post("/api/contacts", json={"email": "gone@example.com", "subscribed": False})
    response = tenant.post("/api/sequences/s/enrolments", json={"email": "gone@example.com"})
    assert response.status_code == 201
    assert response.get_json()["status"] == "exited"
    assert response.get_json()["exitReason"] == "unsubscribed"
    with db.transaction() as session:
        assert session.query(Send).count() == 0


def test_scheduled_lists_pending_steps_earliest_first(tenant: Tenant) -> None:
    active_sequence(tenant, "s", API_ONLY.replace("never", "always"), ("welcome", "tips"))
    ids = [tenant.post("/api/sequences/s/enrolments", json={"email": f"{n}@example.com"}
                       ).get_json()["id"] for n in ("a", "b", "c")]
    page = tenant.get("/api/scheduled?limit=2").get_json()
    assert [item["enrolmentId"] for item in page["data"]] == ids[:2]
    item = page["data"][0]
    assert item["action"] == "email" and item["templateId"] == "tips" and item["step"] == 2
    assert item["email"] == "a@example.com" and item["sequenceId"] == "s"
    assert item["scheduledFor"].endswith("Z") and item["id"].startswith("sch_")
    rest = tenant.get(f"/api/scheduled?limit=2&cursor={page['nextCursor']}").get_json()
    assert [i["enrolmentId"] for i in rest["data"]] == ids[2:] and rest["nextCursor"] is None
    tenant.post("/api/sequences/s/pause")
    with db.transaction() as session:
        assert session.query(Enrolment).filter_by(status="active").count() == 3


def test_editing_keeps_enrolments_on_their_version(tenant: Tenant) -> None:
    active_sequence(tenant, "s", API_ONLY.replace("never", "always"), ("welcome", "tips"))
    tenant.post("/api/sequences/s/enrolments", json={"email": "a@example.com"})
    changed = put_sequence(tenant, "s", API_ONLY.replace("tips", "missing"))
    assert changed.status_code == 422  # an active sequence's new version must be runnable
    put_template(tenant, "other")
    assert put_sequence(tenant, "s", API_ONLY.replace("tips", "other")).status_code == 200
    tenant.post("/api/sequences/s/enrolments", json={"email": "b@example.com"})
    with db.transaction() as session:
        versions = sorted(e.version for e in session.query(Enrolment))
    assert versions == [1, 2]
    items = tenant.get("/api/scheduled").get_json()["data"]
    assert [item["templateId"] for item in items] == ["tips", "other"]


# --- manual enrolment racing another enrolment --------------------------------------------------


def _enrolment_row(tenant: Tenant, contact_id: str) -> dict[str, Any]:
    """An active enrolment of the contact in `s`, as an event's trigger would insert it."""
    now = utcnow()
    return {"id": new_id("enr"), "tenant_id": tenant.id, "sequence_id": "s", "version": 1,
            "contact_id": contact_id, "status": "active", "exclusive": True,
            "current_step": 2, "next_step_at": now + timedelta(days=1), "exit_reason": None,
            "event": None, "enqueued_at": None, "created_at": now, "updated_at": now}


def _contact_id(tenant: Tenant, email: str) -> str:
    response = tenant.post("/api/contacts", json={"email": email})
    assert response.status_code == 201
    return str(response.get_json()["id"])


def test_an_enrolment_made_after_the_policy_check_is_a_conflict_not_an_error(
        tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race, made deterministic: another enrolment lands between the check and the insert."""
    active_sequence(tenant, "s", API_ONLY.replace("never", "afterCompletion"),
                    ("welcome", "tips"))
    contact_id = _contact_id(tenant, "a@example.com")
    original = enrolments.new_enrolment

    def competing(**kwargs: Any) -> dict[str, Any]:
        db.session.execute(insert(Enrolment), [_enrolment_row(tenant, contact_id)])
        return original(**kwargs)

    monkeypatch.setattr(enrolments, "new_enrolment", competing)
    raced = tenant.post("/api/sequences/s/enrolments", json={"email": "a@example.com"})
    monkeypatch.undo()

    assert raced.status_code == 409, raced.get_json()
    assert tenant.get("/api/sequences/s/enrolments").get_json()["data"] == []
    assert tenant.post("/api/sequences/s/enrolments",
                       json={"email": "a@example.com"}).status_code == 201
    duplicate = tenant.post("/api/sequences/s/enrolments", json={"email": "a@example.com"})
    assert (raced.status_code, raced.get_json()) == (409, duplicate.get_json())


def test_an_enrolment_committed_while_the_request_waits_is_a_conflict(
        app: Flask, tenant: Tenant) -> None:
    """A worker's trigger enrols the contact in another transaction while the request runs.

    On PostgreSQL the request does not see the uncommitted row, passes the policy check and
    waits on the unique index; once the other commits, the request must answer 409, as a plain
    duplicate does. (SQLite serialises the two transactions, so there the check sees the row.)
    """
    active_sequence(tenant, "s", API_ONLY.replace("never", "afterCompletion"),
                    ("welcome", "tips"))
    contact_id = _contact_id(tenant, "b@example.com")
    answers: list[Any] = []

    def request() -> None:
        client = app.test_client()
        answers.append(client.post("/api/sequences/s/enrolments", headers=tenant.headers,
                                   json={"contactId": contact_id}))
        db.remove_session()

    holder = db.get_engine().connect()
    transaction = holder.begin()
    try:
        holder.execute(insert(Enrolment), [_enrolment_row(tenant, contact_id)])
        thread = threading.Thread(target=request)
        thread.start()
        if backend() == "postgres":
            with db.get_engine().connect() as watcher:
                wait_for(lambda: watcher.exec_driver_sql(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted").scalar(),
                    message="the request to wait for the other enrolment")
        else:
            time.sleep(0.3)
        transaction.commit()
    finally:
        if transaction.is_active:
            transaction.rollback()
        holder.close()
    thread.join(timeout=30)

    [raced] = answers
    assert raced.status_code == 409, raced.get_json()
    assert raced.get_json()["error"]["code"] == "CONFLICT"
    listed = tenant.get("/api/sequences/s/enrolments").get_json()["data"]
    assert [e["contactId"] for e in listed] == [contact_id]


WITH_PROPERTY_EXIT = API_ONLY.replace("reenrol: never", """reenrol: always
exitConditions:
  - property: contact.properties.plan
    operator: equals
    value: enterprise""")


def _enrolled(tenant: Tenant, email: str) -> str:
    response = tenant.post("/api/sequences/s/enrolments", json={"email": email})
    assert response.status_code == 201 and response.get_json()["status"] == "active"
    return str(response.get_json()["id"])


def _state(tenant: Tenant, enrolment_id: str) -> tuple[str, str | None, str | None]:
    listed = tenant.get("/api/sequences/s/enrolments?limit=100").get_json()["data"]
    enrolment = next(item for item in listed if item["id"] == enrolment_id)
    return enrolment["status"], enrolment["exitReason"], enrolment["nextStepAt"]


def test_unsubscribing_a_contact_ends_its_enrolments_at_once(tenant: Tenant) -> None:
    active_sequence(tenant, "s", WITH_PROPERTY_EXIT, ("welcome", "tips"))
    enrolment = _enrolled(tenant, "ann@example.com")  # its next step is a day away
    kept = _enrolled(tenant, "bob@example.com")

    assert tenant.patch("/api/contacts/ann@example.com",
                        json={"subscribed": False}).status_code == 200

    assert _state(tenant, enrolment) == ("exited", "unsubscribed", None)
    assert _state(tenant, kept)[0] == "active"
    scheduled = tenant.get("/api/scheduled").get_json()["data"]
    assert [item["enrolmentId"] for item in scheduled] == [kept]


def test_a_property_exit_condition_applies_as_soon_as_it_holds(tenant: Tenant) -> None:
    active_sequence(tenant, "s", WITH_PROPERTY_EXIT, ("welcome", "tips"))
    enrolment = _enrolled(tenant, "ann@example.com")

    tenant.patch("/api/contacts/ann@example.com", json={"properties": {"plan": "pro"}})
    assert _state(tenant, enrolment)[0] == "active"
    tenant.put("/api/contacts/ann@example.com", json={"properties": {"plan": "enterprise"}})
    assert _state(tenant, enrolment) == ("exited", "exitCondition", None)


def test_a_suppressed_contact_leaves_at_once(tenant: Tenant) -> None:
    active_sequence(tenant, "s", WITH_PROPERTY_EXIT, ("welcome", "tips"))
    enrolment = _enrolled(tenant, "ann@example.com")
    contact_id = tenant.get("/api/contacts/ann@example.com").get_json()["id"]

    with db.transaction() as session:
        lifecycle.suppress_contact(session, tenant_id=tenant.id, contact_id=contact_id)

    assert _state(tenant, enrolment) == ("exited", "suppressed", None)

"""The contacts service against the database, without HTTP."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update

from app import db
from app.errors import BadRequest
from app.errors import Conflict
from app.errors import NotFound
from app.ids import new_id
from app.models import ArchivedEvent
from app.models import Contact
from app.models import Enrolment
from app.models import Event
from app.models import Send
from app.services import contacts
from app.services import ingest
from app.services import sending
from app.timeutil import utcnow
from tests.api.test_sequences import active_sequence
from tests.conftest import Tenant


def _create(tenant: Tenant, email: str, **kwargs: Any) -> Contact:
    with db.transaction() as session:
        kwargs.setdefault("properties", {})
        return contacts.create_contact(session, tenant_id=tenant.id, email=email, **kwargs)


def test_create_then_create_again_is_a_conflict(tenant: Tenant) -> None:
    made = _create(tenant, "ann@acme.test", properties={"plan": "pro", "gone": None})

    with pytest.raises(Conflict), db.transaction() as session:
        contacts.create_contact(session, tenant_id=tenant.id, email="ann@acme.test",
                                properties={})

    assert made.properties == {"plan": "pro"}
    assert made.subscribed is True and made.suppressed is False
    assert made.created_at == made.updated_at


def test_find_contact_takes_an_id_or_an_email_in_the_tenant_only(tenant: Tenant,
                                                                 other_tenant: Tenant) -> None:
    made = _create(tenant, "Ben@acme.test")

    with db.transaction() as session:
        assert contacts.find_contact(session, tenant_id=tenant.id, ref=made.id).id == made.id
        assert contacts.find_contact(session, tenant_id=tenant.id, ref="Ben@ACME.TEST",
                                     lock=True).id == made.id
        for tenant_id, ref in [(other_tenant.id, made.id), (other_tenant.id, "Ben@acme.test"),
                               (tenant.id, "ben@acme.test"), (tenant.id, "@@")]:
            with pytest.raises(NotFound):
                contacts.find_contact(session, tenant_id=tenant_id, ref=ref)


def test_upsert_reports_whether_it_created(tenant: Tenant) -> None:
    with db.transaction() as session:
        first, created = contacts.upsert_contact(session, tenant_id=tenant.id,
                                                 email="cat@acme.test",
                                                 properties={"a": 1, "b": None}, subscribed=False)
    with db.transaction() as session:
        second, created_again = contacts.upsert_contact(session, tenant_id=tenant.id,
                                                        email="cat@acme.test",
                                                        properties={"a": None, "c": "x"})

    assert (created, created_again) == (True, False)
    assert first.properties == {"a": 1}
    assert second.id == first.id
    assert second.properties == {"c": "x"}
    assert second.subscribed is False  # not given: left as it was
    assert second.updated_at > first.updated_at


def test_every_update_moves_updated_at_forward(tenant: Tenant) -> None:
    made = _create(tenant, "dan@acme.test")
    stamps = [made.updated_at]

    for i in range(5):  # faster than a millisecond apart, still strictly increasing
        with db.transaction() as session:
            stamps.append(contacts.update_contact(session, tenant_id=tenant.id, ref=made.id,
                                                  properties={"i": i}).updated_at)

    assert stamps == sorted(set(stamps))


def test_update_refuses_to_pass_the_property_limit(tenant: Tenant) -> None:
    made = _create(tenant, "eve@acme.test", properties={f"k{i}": i for i in range(100)})

    with pytest.raises(BadRequest) as raised, db.transaction() as session:
        contacts.update_contact(session, tenant_id=tenant.id, ref=made.id,
                                properties={"k100": 1})

    assert raised.value.details is not None and "properties" in raised.value.details
    with db.transaction() as session:
        assert len(contacts.find_contact(session, tenant_id=tenant.id,
                                         ref=made.id).properties) == 100


def test_list_filters_and_pages(tenant: Tenant, other_tenant: Tenant) -> None:
    made = [_create(tenant, f"u{i}@acme.test", subscribed=i % 2 == 0) for i in range(7)]
    _create(other_tenant, "u0@acme.test")
    newest_first = sorted((c.id for c in made), reverse=True)

    with db.transaction() as session:
        seen: list[str] = []
        cursor = None
        while True:
            page = contacts.list_contacts(session, tenant_id=tenant.id, limit=3, cursor=cursor)
            seen += [c.id for c in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        unsubscribed = contacts.list_contacts(session, tenant_id=tenant.id, unsubscribed=True,
                                              limit=100)
        searched = contacts.list_contacts(session, tenant_id=tenant.id, search="U3@", limit=100)

    assert seen == newest_first
    assert {c.email for c in unsubscribed.items} == {"u1@acme.test", "u3@acme.test",
                                                     "u5@acme.test"}
    assert [c.email for c in searched.items] == ["u3@acme.test"]


def test_delete_removes_live_and_archived_events_of_that_contact_only(tenant: Tenant) -> None:
    with db.transaction() as session:
        messages = [ingest.accept_event(session, tenant_id=tenant.id,
                                        data={"email": email, "event": "signed_up"})
                    for email in ("fay@acme.test", "fay@acme.test", "gus@acme.test")]
        rows = ingest.store_events(session, messages=messages)
        session.execute(Event.__table__.delete().where(Event.id == rows[0]["id"]))
        session.execute(ArchivedEvent.__table__.insert(), [rows[0]])

    with db.transaction() as session:
        contacts.delete_contact(session, tenant_id=tenant.id, ref="fay@acme.test")

    with db.transaction() as session:
        live = set(session.scalars(select(Event.id)))
        archived = set(session.scalars(select(ArchivedEvent.id)))
        emails = set(session.scalars(select(Contact.email)))
    assert live == {rows[2]["id"]}
    assert archived == set()
    assert emails == {"gus@acme.test"}


# --- deletion ends enrolments and cancels unsent e-mail -----------------------------------------

DRIP = """
trigger:
  api: true
steps:
  - send: welcome
  - delay: 1d
  - send: tips
"""

ONE_SHOT = """
trigger:
  event: signed_up
steps:
  - send: tips
"""


def _enrol(tenant: Tenant, sequence_id: str, email: str) -> str:
    response = tenant.post(f"/api/sequences/{sequence_id}/enrolments", json={"email": email})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def _state(model: type[Send] | type[Enrolment], row_id: str) -> Any:
    with db.transaction() as session:
        return session.get(model, row_id)


def _sends_of(contact_id: str) -> list[Send]:
    with db.transaction() as session:
        return list(session.scalars(select(Send).where(Send.contact_id == contact_id)
                                    .order_by(Send.id)))


def test_delete_ends_every_active_enrolment_and_cancels_only_unclaimed_sends(
        tenant: Tenant) -> None:
    active_sequence(tenant, "drip", DRIP, ("welcome", "tips"))
    active_sequence(tenant, "held", DRIP, ())
    active_sequence(tenant, "one-shot", ONE_SHOT, ())
    running = _enrol(tenant, "drip", "ann@acme.test")  # its first e-mail queued, no worker here
    held = _enrol(tenant, "held", "ann@acme.test")
    assert tenant.post("/api/sequences/held/pause").status_code == 200
    with db.transaction() as session:  # enrols, keeping the enrolling event
        ingest.store_events(session, messages=[ingest.accept_event(
            session, tenant_id=tenant.id, data={"email": "ann@acme.test", "event": "signed_up"})])
        session.execute(update(Enrolment).where(Enrolment.sequence_id == "one-shot")
                        .values(status="completed", next_step_at=None))  # as if it ran
    bystander = _enrol(tenant, "drip", "bob@acme.test")
    with db.transaction() as session:
        ann = contacts.find_contact(session, tenant_id=tenant.id, ref="ann@acme.test")
        [finished] = session.scalars(select(Enrolment).where(Enrolment.sequence_id == "one-shot"))
        assert finished.status == "completed" and finished.event is not None
        in_flight = sending.create_send(session, tenant_id=tenant.id, contact_id=ann.id,
                                        email=ann.email, template_id="welcome")
        in_flight.status = "sending"  # claimed: the transport may be running
    ann_id, finished_id = ann.id, finished.id

    with db.transaction() as session:
        contacts.delete_contact(session, tenant_id=tenant.id, ref="ann@acme.test")

    for enrolment_id in (running, held):
        ended = _state(Enrolment, enrolment_id)
        assert (ended.status, ended.exit_reason, ended.next_step_at) == (
            "exited", "contactDeleted", None)
    finished = _state(Enrolment, finished_id)
    assert (finished.status, finished.event) == ("completed", None)
    sends = _sends_of(ann_id)
    assert [(s.template_id, s.status, s.error) for s in sends] == [
        ("welcome", "rejected", "Cancelled: the contact was deleted."),  # drip's step 0
        ("welcome", "rejected", "Cancelled: the contact was deleted."),  # held's step 0
        ("welcome", "sending", None)]  # left to finish
    assert {send.email for send in sends} == {""}
    other = _state(Enrolment, bystander)
    assert (other.status, other.next_step_at is not None) == ("active", True)
    [bobs] = _sends_of(other.contact_id)
    assert (bobs.status, bobs.email) == ("queued", "bob@acme.test")


def test_delete_cancels_the_email_of_a_step_that_was_running_meanwhile(tenant: Tenant) -> None:
    """A step runner holds the enrolment (and, on SQLite, the database) and queues an e-mail;
    the deletion waits for it, then ends the enrolment and cancels that e-mail too."""
    active_sequence(tenant, "drip", DRIP, ("welcome", "tips"))
    enrolment_id = _enrol(tenant, "drip", "cy@acme.test")
    enrolment = _state(Enrolment, enrolment_id)
    now = utcnow()
    holder = db.get_engine().connect()
    transaction = holder.begin()
    done = threading.Event()

    def delete() -> None:
        with db.transaction() as session:
            contacts.delete_contact(session, tenant_id=tenant.id, ref="cy@acme.test")
        done.set()

    try:
        holder.execute(select(Enrolment.id).where(Enrolment.id == enrolment_id)
                       .with_for_update())
        holder.execute(insert(Send), [{
            "id": new_id("snd"), "tenant_id": tenant.id, "contact_id": enrolment.contact_id,
            "email": "cy@acme.test", "template_id": "tips", "status": "queued",
            "source": "sequence", "source_id": "drip", "enrolment_id": enrolment_id,
            "step_index": 2, "variables": {}, "context": {}, "links": [], "attempts": 0,
            "created_at": now, "updated_at": now}])
        thread = threading.Thread(target=delete)
        thread.start()
        assert not done.wait(0.5)  # waits for the step runner
        transaction.commit()
    finally:
        if transaction.is_active:
            transaction.rollback()
        holder.close()
    thread.join(timeout=30)

    assert done.is_set()
    assert _state(Enrolment, enrolment_id).status == "exited"
    assert sorted((s.template_id, s.status, s.email)
                  for s in _sends_of(enrolment.contact_id)) == [
        ("tips", "rejected", ""), ("welcome", "rejected", "")]

"""The contacts service against the database, without HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app import db
from app.errors import BadRequest
from app.errors import Conflict
from app.errors import NotFound
from app.models import ArchivedEvent
from app.models import Contact
from app.models import Event
from app.services import contacts
from app.services import ingest
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

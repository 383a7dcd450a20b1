"""Contacts: one per tenant and normalised e-mail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import delete
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import insert_if_absent
from app.errors import BadRequest
from app.errors import Conflict
from app.errors import NotFound
from app.ids import new_id
from app.models import ArchivedEvent
from app.models import Contact
from app.models import Event
from app.models import Send
from app.schemas.fields import MAX_PROPERTIES
from app.schemas.fields import normalise_email
from app.services.pages import Page
from app.services.pages import page_by_id
from app.timeutil import isoformat
from app.timeutil import utcnow

_ONE_MS = timedelta(milliseconds=1)


class _NoSuchContact:
    """Marker: the filter names a contact that does not exist (yet), so nothing can match."""


NO_SUCH_CONTACT = _NoSuchContact()


def find_contact(db: Session, *, tenant_id: str, ref: str, lock: bool = False) -> Contact:
    """The contact with id or e-mail `ref` in this tenant, or NotFound; `lock` holds its row."""
    column = Contact.email if "@" in ref else Contact.id
    if "@" in ref:
        try:
            ref = normalise_email(ref)
        except ValidationError:
            raise NotFound(f"Contact {ref} not found.") from None
    query = select(Contact).where(Contact.tenant_id == tenant_id, column == ref)
    if lock:
        # FOR UPDATE serialises read-modify-write merges on PostgreSQL (SQLite ignores it: there
        # every write transaction already holds the database lock).
        query = query.with_for_update().execution_options(populate_existing=True)
    contact = db.scalar(query)
    if contact is None:
        raise NotFound(f"Contact {ref} not found.")
    return contact


def resolve_contact_filter(db: Session, *, tenant_id: str, contact_id: str | None,
                           email: str | None) -> str | _NoSuchContact | None:
    """Turn a `contactId`/`email` filter into a contact id.

    An unknown `contactId` is a 404; an unknown e-mail simply has no events yet (its first event
    may still be on its way to the worker).
    """
    if contact_id:
        return find_contact(db, tenant_id=tenant_id, ref=contact_id).id
    if email:
        found = db.scalar(select(Contact.id).where(Contact.tenant_id == tenant_id,
                                                   Contact.email == email))
        return found if found is not None else NO_SUCH_CONTACT
    return None


def _insert(db: Session, *, tenant_id: str, email: str, properties: dict[str, Any],
            subscribed: bool) -> bool:
    """Insert the contact unless the tenant already has this e-mail; return whether it did."""
    now = utcnow()
    row = {"id": new_id("cnt"), "tenant_id": tenant_id, "email": email,
           "properties": {key: value for key, value in properties.items() if value is not None},
           "subscribed": subscribed, "suppressed": False, "created_at": now, "updated_at": now}
    # ON CONFLICT DO NOTHING rather than catching IntegrityError: a concurrent creator makes this
    # wait for its commit and then skip, without aborting our transaction.
    return insert_if_absent(db, Contact.__table__, row, ["tenant_id", "email"])


def create_contact(db: Session, *, tenant_id: str, email: str, properties: dict[str, Any],
                   subscribed: bool = True) -> Contact:
    """Create a contact; Conflict if the tenant already has this (normalised) e-mail."""
    if not _insert(db, tenant_id=tenant_id, email=email, properties=properties,
                   subscribed=subscribed):
        raise Conflict(f"A contact with e-mail {email} already exists.")
    return find_contact(db, tenant_id=tenant_id, ref=email)


def _apply_changes(contact: Contact, *, properties: dict[str, Any],
                   subscribed: bool | None) -> None:
    merged = dict(contact.properties or {})
    for key, value in properties.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_PROPERTIES:
        message = f"A contact has at most {MAX_PROPERTIES} properties; remove some first."
        raise BadRequest(f"properties: {message}", details={"properties": [message]})
    contact.properties = merged  # a new dict, so the JSON column is seen as changed
    if subscribed is not None:
        contact.subscribed = subscribed
    # Strictly later than before, so a client comparing timestamps sees every change even within
    # one millisecond.
    contact.updated_at = max(utcnow(), contact.updated_at + _ONE_MS)


def upsert_contact(db: Session, *, tenant_id: str, email: str, properties: dict[str, Any],
                   subscribed: bool | None = None) -> tuple[Contact, bool]:
    """Create the contact, or merge into the existing one; return it and whether it is new."""
    # Twice, because the row that made the insert skip may be deleted before we can lock it.
    for _attempt in range(2):
        created = _insert(db, tenant_id=tenant_id, email=email, properties=properties,
                          subscribed=True if subscribed is None else subscribed)
        try:
            contact = find_contact(db, tenant_id=tenant_id, ref=email, lock=not created)
        except NotFound:
            continue
        if not created:
            _apply_changes(contact, properties=properties, subscribed=subscribed)
            _reconsider_enrolments(db, contact)
        return contact, created
    raise Conflict(f"The contact {email} changed concurrently; retry the request.")


def update_contact(db: Session, *, tenant_id: str, ref: str, properties: dict[str, Any],
                   subscribed: bool | None = None) -> Contact:
    """Merge `properties` (a None value removes the key) and set `subscribed` if given."""
    contact = find_contact(db, tenant_id=tenant_id, ref=ref, lock=True)
    _apply_changes(contact, properties=properties, subscribed=subscribed)
    _reconsider_enrolments(db, contact)
    return contact


def _reconsider_enrolments(db: Session, contact: Contact) -> None:
    """An unsubscribe, or a property an exit condition tests, ends enrolments at once."""
    from app.services import triggers  # here: triggers → enrolments → this module

    db.flush()
    triggers.on_contact_changed(db, tenant_id=contact.tenant_id, contact_id=contact.id)


def delete_contact(db: Session, *, tenant_id: str, ref: str) -> None:
    """Delete the contact and its events (live and archived), end its enrolments and cancel its
    unsent e-mail, all in the caller's transaction; what stays holds no personal data.

    Enrolment and send rows stay for the statistics, with the contact's e-mail address and
    whatever was rendered from it erased (see `erase_contact_enrolments`, `erase_contact_sends`).
    Locks are taken in the order the e-mail paths take them, the sends before the contact (a
    tracked click locks its send, then the contact), so the two never deadlock; the events go
    last, after anything that was recording one for this contact has committed.
    """
    # Imported here: both modules import this one.
    from app.services import enrolments
    from app.services import sending

    contact_id = find_contact(db, tenant_id=tenant_id, ref=ref).id
    db.execute(select(Send.id).where(Send.tenant_id == tenant_id, Send.contact_id == contact_id)
               .order_by(Send.id).with_for_update())
    contact = find_contact(db, tenant_id=tenant_id, ref=contact_id, lock=True)
    enrolments.erase_contact_enrolments(db, tenant_id=tenant_id, contact_id=contact.id)
    sending.erase_contact_sends(db, tenant_id=tenant_id, contact_id=contact.id,
                                email=contact.email)
    for model in (Event, ArchivedEvent):
        db.execute(delete(model).where(model.tenant_id == tenant_id,
                                       model.contact_id == contact.id))
    db.delete(contact)
    db.flush()


def list_contacts(db: Session, *, tenant_id: str, search: str | None = None,
                  suppressed: bool | None = None, unsubscribed: bool | None = None,
                  limit: int, cursor: str | None = None) -> Page[Contact]:
    """A page of the tenant's contacts, newest first (ids sort by creation time)."""
    query = select(Contact).where(Contact.tenant_id == tenant_id)
    if search:
        query = query.where(Contact.email.icontains(search, autoescape=True))
    if suppressed is not None:
        query = query.where(Contact.suppressed == suppressed)
    if unsubscribed is not None:
        query = query.where(Contact.subscribed == (not unsubscribed))
    return page_by_id(db, query, Contact.id, limit=limit, cursor=cursor, newest_first=True)


def contact_view(contact: Contact) -> dict[str, Any]:
    """The API's contact object."""
    return {
        "id": contact.id,
        "email": contact.email,
        "properties": contact.properties,
        "subscribed": contact.subscribed,
        "unsubscribed": not contact.subscribed,
        "suppressed": contact.suppressed,
        "createdAt": isoformat(contact.created_at),
        "updatedAt": isoformat(contact.updated_at),
    }

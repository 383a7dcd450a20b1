"""Contacts: one per tenant and normalised e-mail."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import Contact
from app.timeutil import isoformat


class _NoSuchContact:
    """Marker: the filter names a contact that does not exist (yet), so nothing can match."""


NO_SUCH_CONTACT = _NoSuchContact()


def find_contact(db: Session, *, tenant_id: str, ref: str) -> Contact:
    """The contact with id or e-mail `ref` in this tenant, or NotFound."""
    column = Contact.email if "@" in ref else Contact.id
    if "@" in ref:
        from app.schemas.fields import normalise_email
        from marshmallow import ValidationError

        try:
            ref = normalise_email(ref)
        except ValidationError:
            raise NotFound(f"Contact {ref} not found.") from None
    contact = db.scalar(select(Contact).where(Contact.tenant_id == tenant_id, column == ref))
    if contact is None:
        raise NotFound(f"Contact {ref} not found.")
    return contact


def resolve_contact_filter(db: Session, *, tenant_id: str, contact_id: str | None,
                           email: str | None) -> str | None | _NoSuchContact:
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

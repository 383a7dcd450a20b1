"""The e-mail lifecycle: each step updates the send and records a system event, once.

Every function takes the send row (locked or freshly claimed by the caller), is idempotent where
the provider may repeat itself, and never commits. System events go through the same storage as
tracked events (`ingest.store_events`), so they are listable and can trigger sequences.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.ids import new_id
from app.models import Contact
from app.models import Send
from app.services import ingest
from app.services import triggers
from app.timeutil import isoformat
from app.timeutil import utcnow

_DEFERRED_EVENTS = "kraiter.deferred_system_events"
FINAL_STATUSES = frozenset({"bounced", "complained", "rejected", "failed"})


def record_system_event(db: Session, *, send: Send, name: str,
                        extra: dict[str, Any] | None = None, at: datetime | None = None) -> str:
    """Store the system event `name` (e.g. `email.opened`) on the send's contact; return its id.

    The caller holds the send's row lock and has checked that its contact exists (see
    `ingest.store_events`: the contact is then taken as given, without a query).
    """
    at = at or utcnow()
    properties: dict[str, Any] = {"sendId": send.id, "templateId": send.template_id}
    if send.source == "sequence":
        properties.update(sequenceId=send.source_id, enrolmentId=send.enrolment_id)
    properties.update(extra or {})
    event_id = new_id("evt")
    message = {"id": event_id, "tenantId": send.tenant_id, "email": send.email,
               "contactId": send.contact_id, "event": name, "properties": properties,
               "timestamp": isoformat(at), "createdAt": isoformat(utcnow()), "source": "system"}
    deferred = db.info.get(_DEFERRED_EVENTS)
    if deferred is not None:
        deferred.append(message)
    else:
        ingest.store_events(db, messages=[message])
    return event_id


@contextmanager
def system_events_last(db: Session) -> Iterator[None]:
    """Store the system events recorded inside the block when it ends, after its other writes.

    Storing an event holds the tenant's live-feed lock until the transaction commits (see
    `services.feed`), so a hot path that still has rows to write does those first.
    """
    pending: list[dict[str, Any]] = []
    db.info[_DEFERRED_EVENTS] = pending
    try:
        yield
    finally:
        db.info.pop(_DEFERRED_EVENTS, None)
    if pending:
        ingest.store_events(db, messages=pending)


def _touch(send: Send, now: datetime) -> None:
    send.updated_at = now


def mark_sent(db: Session, *, send: Send, provider_message_id: str | None) -> None:
    """The transport accepted the message."""
    now = utcnow()
    send.status, send.sent_at, send.provider_message_id = "sent", now, provider_message_id
    _touch(send, now)
    record_system_event(db, send=send, name="email.sent", at=now)


def mark_delivered(db: Session, *, send: Send, at: datetime | None = None) -> bool:
    """The recipient's server accepted it (provider feedback). False if already known."""
    if send.delivered_at is not None:
        return False
    now = at or utcnow()
    send.delivered_at = now
    if send.status in {"queued", "sending", "sent"}:
        send.status = "delivered"
    _touch(send, utcnow())
    record_system_event(db, send=send, name="email.delivered", at=now)
    return True


def suppress_contact(db: Session, *, tenant_id: str, contact_id: str) -> None:
    """No further e-mail to this contact (hard bounce, complaint)."""
    db.execute(update(Contact).where(Contact.tenant_id == tenant_id, Contact.id == contact_id)
               .values(suppressed=True, updated_at=utcnow()))
    triggers.on_contact_changed(db, tenant_id=tenant_id, contact_id=contact_id)


def mark_bounced(db: Session, *, send: Send, bounce_type: str, reason: str,
                 at: datetime | None = None) -> bool:
    """A hard or soft bounce; a hard one suppresses the contact. False if already recorded."""
    if send.bounced_at is not None:
        return False
    now = at or utcnow()
    send.status, send.bounced_at, send.bounce_type, send.error = "bounced", now, bounce_type, reason
    _touch(send, utcnow())
    if bounce_type == "hard":
        suppress_contact(db, tenant_id=send.tenant_id, contact_id=send.contact_id)
    record_system_event(db, send=send, name="email.bounced", at=now,
                        extra={"bounceType": bounce_type, "reason": reason})
    return True


def mark_complained(db: Session, *, send: Send, at: datetime | None = None) -> bool:
    """The recipient reported it as spam: suppress the contact. False if already recorded."""
    if send.complained_at is not None:
        return False
    now = at or utcnow()
    send.status, send.complained_at = "complained", now
    _touch(send, utcnow())
    suppress_contact(db, tenant_id=send.tenant_id, contact_id=send.contact_id)
    record_system_event(db, send=send, name="email.complained", at=now)
    return True


def mark_opened(db: Session, *, send: Send) -> None:
    """An open (pixel fetched). Every open is an event; `openedAt` keeps the first."""
    now = utcnow()
    send.opened_at = send.opened_at or now
    _touch(send, now)
    record_system_event(db, send=send, name="email.opened", at=now)


def mark_clicked(db: Session, *, send: Send, url: str) -> None:
    """A tracked link was followed. Every click is an event; `clickedAt` keeps the first."""
    now = utcnow()
    send.clicked_at = send.clicked_at or now
    _touch(send, now)
    record_system_event(db, send=send, name="email.clicked", at=now, extra={"url": url})


def mark_unsubscribed(db: Session, *, send: Send) -> bool:
    """Unsubscribe the send's contact; the event is recorded only when the state changes."""
    now = utcnow()
    changed = db.execute(
        update(Contact)
        .where(Contact.tenant_id == send.tenant_id, Contact.id == send.contact_id,
               Contact.subscribed.is_(True))
        .values(subscribed=False, updated_at=now)
    ).rowcount  # type: ignore[attr-defined]
    if not changed:
        return False
    triggers.on_contact_changed(db, tenant_id=send.tenant_id, contact_id=send.contact_id)
    send.unsubscribed_at = send.unsubscribed_at or now
    _touch(send, now)
    record_system_event(db, send=send, name="email.unsubscribed", at=now)
    return True

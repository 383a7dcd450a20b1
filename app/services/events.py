"""Reading events: timelines, the tenant feed and the archive."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import Select
from sqlalchemy import select
from sqlalchemy import tuple_
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import ArchivedEvent
from app.models import Event
from app.schemas.common import decode_cursor
from app.services.pages import Page
from app.services.pages import page_from_rows
from app.timeutil import isoformat
from app.timeutil import parse_iso

AnyEvent = Event | ArchivedEvent


def _cursor_of(event: AnyEvent) -> dict[str, str]:
    return {"t": isoformat(event.timestamp) or "", "i": event.id}


def _after_cursor(query: Select[Any], model: type[AnyEvent], cursor: str) -> Select[Any]:
    values = decode_cursor(cursor, required_keys=("t", "i"))
    try:
        timestamp = parse_iso(values["t"])
    except ValueError:
        raise ValidationError({"cursor": ["Not a valid cursor."]}) from None
    return query.where(tuple_(model.timestamp, model.id) < tuple_(timestamp, values["i"]))


def list_events(db: Session, *, tenant_id: str, contact_id: str | None = None,
                name: str | None = None, since: datetime | None = None,
                until: datetime | None = None, archived: bool = False, limit: int,
                cursor: str | None = None) -> Page[AnyEvent]:
    """A page of the tenant's events, newest first, filtered as asked."""
    model: type[AnyEvent] = ArchivedEvent if archived else Event
    query = select(model).where(model.tenant_id == tenant_id)
    if contact_id is not None:
        query = query.where(model.contact_id == contact_id)
    if name is not None:
        query = query.where(model.name == name)
    if since is not None:
        query = query.where(model.timestamp >= since)
    if until is not None:
        query = query.where(model.timestamp < until)
    if cursor:
        query = _after_cursor(query, model, cursor)
    query = query.order_by(model.timestamp.desc(), model.id.desc()).limit(limit + 1)
    return page_from_rows(list(db.scalars(query)), limit=limit, cursor_of=_cursor_of)


def get_event(db: Session, *, tenant_id: str, event_id: str) -> AnyEvent:
    """One event of the tenant, live or archived."""
    live = db.scalar(select(Event).where(Event.tenant_id == tenant_id, Event.id == event_id))
    if live is not None:
        return live
    archived = db.scalar(select(ArchivedEvent).where(ArchivedEvent.tenant_id == tenant_id,
                                                     ArchivedEvent.id == event_id))
    if archived is not None:
        return archived
    raise NotFound(f"Event {event_id} not found.")


def event_view(event: AnyEvent) -> dict[str, Any]:
    """The API's event item."""
    return {
        "id": event.id,
        "event": event.name,
        "name": event.name,
        "contactId": event.contact_id,
        "email": event.email,
        "properties": event.properties,
        "timestamp": isoformat(event.timestamp),
        "createdAt": isoformat(event.created_at),
        "source": event.source,
    }

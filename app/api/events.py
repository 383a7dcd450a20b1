"""Events: track (one or a batch), list, get."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask import g
from flask import request
from marshmallow import ValidationError

from app import db
from app.api.blueprint import api
from app.api.blueprint import document
from app.api.idempotency import idempotent
from app.auth import require_api_key
from app.errors import APIError
from app.errors import NotFound
from app.errors import validation_message
from app.schemas.common import read_json_object
from app.schemas.events import AcceptedEventSchema
from app.schemas.events import BatchAnswerSchema
from app.schemas.events import EventItemSchema
from app.schemas.events import EventListQuery
from app.schemas.events import EventPageSchema
from app.schemas.events import TrackBatchSchema
from app.schemas.events import TrackEventSchema
from app.schemas.events import plain_batch_events
from app.schemas.events import plain_track_event
from app.services import contacts
from app.services import events
from app.services import ingest
from app.timeutil import utcnow

_track = TrackEventSchema()
_batch = TrackBatchSchema()
_list_query = EventListQuery()


def _settings() -> Any:
    return current_app.config["SETTINGS"]


def _load_event(body: Any) -> dict[str, Any]:
    """The schema's data for one event body; the plain check first, as it costs a tenth."""
    return plain_track_event(body) or _track.load(body)


def _enqueue(messages: list[dict[str, Any]]) -> None:
    current_app.extensions["ingest_batcher"].submit(messages)


document("/events", "post", "Track an event", tag="events", status=202,
         body=TrackEventSchema, response=AcceptedEventSchema)


@api.post("/events")
@require_api_key
@idempotent
def track_event() -> Any:
    """Accept one event for the worker to store."""
    body = read_json_object(request, max_bytes=_settings().max_body_bytes)
    message = ingest.accept_event(db.session, tenant_id=g.tenant_id, data=_load_event(body))
    db.session.rollback()  # read-only so far: end the transaction before waiting on the broker
    _enqueue([message])
    return ingest.accepted_view(message), 202


def _item_error(error: ValidationError | APIError) -> dict[str, Any]:
    if isinstance(error, APIError):
        return {"error": {"code": error.code, "message": error.message}}
    details = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return {"error": {"code": "VALIDATION_ERROR", "message": validation_message(details),
                      "details": details}}


def _load_item(item: Any) -> dict[str, Any] | ValidationError:
    if not isinstance(item, dict):
        return ValidationError("Each item must be an event object.")
    try:
        data = _load_event(item)
    except ValidationError as error:
        return error
    return data


def _accept_items(items: list[Any]) -> list[tuple[dict[str, Any] | None, dict[str, Any]]]:
    """Validate and stamp each item on its own; (message or None, result) per item, in order."""
    loaded = [_load_item(item) for item in items]
    session, tenant_id = db.session, g.tenant_id  # looked up once: `g` is a context-local proxy
    known = ingest.contact_emails(session, tenant_id=tenant_id, contact_ids=[
        data["contactId"] for data in loaded if isinstance(data, dict) and data.get("contactId")])
    outcomes: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
    now = utcnow()  # the batch is accepted at one moment
    for data in loaded:
        if isinstance(data, ValidationError):
            outcomes.append((None, _item_error(data)))
            continue
        try:
            message = ingest.accept_event(session, tenant_id=tenant_id, data=data,
                                          known_contacts=known, now=now)
        except APIError as error:
            outcomes.append((None, _item_error(error)))
        else:
            outcomes.append((message, ingest.accepted_view(message)))
    return outcomes


document("/events/batch", "post", "Track up to 500 events", tag="events", status=202,
         body=TrackBatchSchema, response=BatchAnswerSchema)


@api.post("/events/batch")
@require_api_key
@idempotent
def track_batch() -> Any:
    """Accept each valid item of a batch; one result per item, in order."""
    body = read_json_object(request, max_bytes=_settings().max_batch_body_bytes)
    outcomes = _accept_items(plain_batch_events(body) or _batch.load(body)["events"])
    db.session.rollback()  # read-only: end the transaction before waiting on the broker
    messages = [message for message, _ in outcomes if message is not None]
    if messages:
        _enqueue(messages)
    results = [result for _, result in outcomes]
    return {"results": results, "data": results, "accepted": len(messages),
            "rejected": len(results) - len(messages)}, 202


document("/events", "get", "List events, newest first", tag="events",
         query=EventListQuery, response=EventPageSchema)


@api.get("/events")
@require_api_key
def list_events() -> Any:
    """A page of the tenant's events, newest first."""
    query = _list_query.load(request.args)
    contact_id = contacts.resolve_contact_filter(
        db.session, tenant_id=g.tenant_id, contact_id=query.get("contactId"),
        email=query.get("email"))
    if not (contact_id is None or isinstance(contact_id, str)):  # NO_SUCH_CONTACT
        return {"data": [], "nextCursor": None}
    page = events.list_events(
        db.session, tenant_id=g.tenant_id, contact_id=contact_id, name=query.get("event"),
        since=query.get("since"), until=query.get("until"), archived=query["archived"],
        limit=query["limit"], cursor=query["cursor"])
    return {"data": [events.event_view(e) for e in page.items], "nextCursor": page.next_cursor}


document("/events/{id}", "get", "Get one event", tag="events", response=EventItemSchema)


@api.get("/events/<event_id>")
@require_api_key
def get_event(event_id: str) -> Any:
    """One event of the tenant (another tenant's id is a 404)."""
    if "\x00" in event_id:  # no id has one, and PostgreSQL refuses it as a parameter
        raise NotFound("Event not found.")
    return events.event_view(events.get_event(db.session, tenant_id=g.tenant_id,
                                              event_id=event_id))

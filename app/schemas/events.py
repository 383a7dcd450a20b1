"""Event request schemas (these validate, and the OpenAPI document is generated from them)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from datetime import timedelta
from typing import Any
from typing import ClassVar
from typing import TypeGuard

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import post_load
from marshmallow import pre_load
from marshmallow import validate
from marshmallow import validates_schema

from app.schemas.common import PageQuery
from app.schemas.common import StrictSchema
from app.schemas.fields import MAX_PROPERTIES
from app.schemas.fields import MAX_PROPERTY_KEY_LENGTH
from app.schemas.fields import MAX_STRING_VALUE_LENGTH
from app.schemas.fields import MIN_YEAR
from app.schemas.fields import Email
from app.schemas.fields import FlatProperties
from app.schemas.fields import Timestamp
from app.schemas.fields import normalise_email
from app.schemas.fields import storable_text
from app.timeutil import parse_iso
from app.timeutil import truncate_ms
from app.timeutil import utcnow

SYSTEM_EVENT_PREFIX = "email."
MAX_EVENT_NAME_LENGTH = 200
MAX_BATCH_EVENTS = 500
MAX_FUTURE_SKEW = timedelta(days=1)
_CONTACT_ID: list[Callable[[Any], Any]] = [validate.Length(min=1, max=255), storable_text]
_EVENT_NAME: list[Callable[[Any], Any]] = [validate.Length(min=1, max=MAX_EVENT_NAME_LENGTH),
                                          storable_text]


class TrackEventSchema(StrictSchema):
    """`POST /api/events`: who (`email` or `contactId`), what (`event`, alias `name`), details."""

    # Optional fields accept null as "not given": SDKs often serialise unset options that way.
    email = Email(allow_none=True,
                  metadata={"description": "The contact's e-mail; the contact is created if "
                                           "unknown. Give `email` or `contactId`."})
    contactId = fields.String(allow_none=True, validate=_CONTACT_ID,
                              metadata={"description": "Wins over `email` when both are given."})
    event = fields.String(validate=_EVENT_NAME,
                          metadata={"description": "The event name (or give `name`): 1-200 "
                                                   "characters, case-sensitive, kept as sent; "
                                                   "`email.*` names are reserved for system "
                                                   "events."})
    name = fields.String(validate=_EVENT_NAME,
                         metadata={"description": "Alias of `event`; `event` wins if both."})
    properties = FlatProperties(load_default=dict, allow_none=True,
                                metadata={"description": "Flat: string, number or boolean values; "
                                                         "at most 100 keys of 1-100 characters, "
                                                         "strings up to 2,000 characters."})
    timestamp = Timestamp(allow_none=True,
                          metadata={"description": "ISO 8601; defaults to now; may be back-dated, "
                                                   "at most a day ahead."})

    # Rules the fields cannot express, for the OpenAPI document.
    openapi_extra: ClassVar[dict[str, Any]] = {"allOf": [
        {"anyOf": [{"required": ["event"]}, {"required": ["name"]}]},
        {"anyOf": [{"required": ["email"]}, {"required": ["contactId"]}]},
    ]}

    # Runs even when some fields failed, so one answer names every problem; it looks at the raw
    # input to tell "missing" from "present but invalid" (an invalid field is absent from data).
    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _check(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        if not isinstance(original, dict):
            return
        errors: dict[str, list[str]] = {}
        field = "event" if "event" in original else "name"
        name = data.get(field)
        if "event" not in original and "name" not in original:
            errors["event"] = ["Missing data for required field."]
        elif name is not None and name.startswith(SYSTEM_EVENT_PREFIX):
            errors[field] = [f"Event names starting with '{SYSTEM_EVENT_PREFIX}' are system "
                             "events, created only by Kraiter; choose another name."]
        if original.get("email") is None and original.get("contactId") is None:
            errors["email"] = ["Give 'email' or 'contactId'."]
        timestamp = data.get("timestamp")
        if timestamp is not None and timestamp > utcnow() + MAX_FUTURE_SKEW:
            errors["timestamp"] = ["Must not be more than a day in the future."]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _resolve_alias(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        alias = data.pop("name", None)
        data.setdefault("event", alias)
        if data.get("properties") is None:
            data["properties"] = {}
        return data


# --- The same rules in plain Python, for the common body -------------------------------------
# `TrackEventSchema().load` costs about 35 µs an event, most of the web process's validation time
# on the ingest path. `plain_track_event` proves a body valid in a few µs, or gives up: callers
# then load it with the schema, which also words the errors. It never refuses anything itself,
# so the two can differ only by giving up too often (tests/test_ingest_plain_check.py checks
# that, whenever it answers, it answers exactly what the schema loads).

_TRACK_FIELDS = frozenset(TrackEventSchema._declared_fields)


def _storable(text: str) -> bool:
    """`storable_text` as a test: no NUL, no lone surrogate."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain_name(value: Any) -> TypeGuard[str]:
    return (type(value) is str and 1 <= len(value) <= MAX_EVENT_NAME_LENGTH
            and _storable(value))


def _plain_properties(value: Any) -> dict[str, Any] | None:
    if value is None:
        return {}
    if type(value) is not dict or len(value) > MAX_PROPERTIES:
        return None
    for key, item in value.items():
        if (type(key) is not str or not 1 <= len(key) <= MAX_PROPERTY_KEY_LENGTH
                or not _storable(key)):
            return None
        kind = type(item)
        if kind is str:
            if len(item) > MAX_STRING_VALUE_LENGTH or not _storable(item):
                return None
        elif kind is float:
            if not math.isfinite(item):
                return None
        elif kind is not int and kind is not bool:
            return None
    return dict(value)


def _plain_timestamp(value: Any) -> datetime | None:
    """The parsed timestamp, or None when it is not one the schema surely accepts."""
    if type(value) is not str:
        return None
    try:
        parsed = parse_iso(value)
    except (ValueError, OverflowError):
        return None
    if parsed.year < MIN_YEAR:
        return None
    parsed = truncate_ms(parsed)
    return None if parsed > utcnow() + MAX_FUTURE_SKEW else parsed


def plain_batch_events(body: Any) -> list[Any] | None:
    """What `TrackBatchSchema().load(body)["events"]` returns, for the common valid body (only
    `events`, a list of 1-500 items, none of them null); None for anything else."""
    if type(body) is not dict or len(body) != 1:
        return None
    items = body.get("events")
    if type(items) is not list or not 1 <= len(items) <= MAX_BATCH_EVENTS or None in items:
        return None
    return items


def plain_track_event(body: Any) -> dict[str, Any] | None:
    """What `TrackEventSchema().load(body)` returns, for a valid body that names its contact by
    `email`; None for anything else (invalid, or by `contactId`, which needs a lookup)."""
    if type(body) is not dict or not body.keys() <= _TRACK_FIELDS:
        return None
    if body.get("contactId") is not None or type(body.get("email")) is not str:
        return None
    # `event` wins over its alias `name`, but both must be valid names when both are given.
    chosen = "event" if "event" in body else "name"
    name = body.get(chosen)
    if not _plain_name(name) or name.startswith(SYSTEM_EVENT_PREFIX):
        return None
    if "name" in body and not _plain_name(body["name"]):
        return None
    properties = _plain_properties(body.get("properties"))
    if properties is None:
        return None
    try:
        email = normalise_email(body["email"])
    except ValidationError:
        return None
    data: dict[str, Any] = {"email": email, "event": name, "properties": properties}
    if "contactId" in body:
        data["contactId"] = None
    if "timestamp" in body:
        data["timestamp"] = None
        if body["timestamp"] is not None:
            data["timestamp"] = _plain_timestamp(body["timestamp"])
            if data["timestamp"] is None:
                return None
    return data


class TrackBatchSchema(StrictSchema):
    """`POST /api/events/batch`: up to 500 event bodies, each validated on its own."""

    # Items stay raw here: each is validated by TrackEventSchema on its own, so one bad item
    # (even one that is not an object) is reported in its slot instead of failing the batch.
    events = fields.List(fields.Raw(metadata={"openapi_schema": TrackEventSchema}), required=True,
                         validate=validate.Length(min=1, max=MAX_BATCH_EVENTS),
                         metadata={"description": "1-500 items, each a `POST /api/events` body."})


class EventListQuery(PageQuery):
    """`GET /api/events` filters."""

    email = Email(metadata={"description": "Only this contact's events."})
    contactId = fields.String(validate=storable_text,
                              metadata={"description": "Only this contact's events (404 if the "
                                                       "contact does not exist)."})
    event = fields.String(validate=_EVENT_NAME,
                          metadata={"description": "Exact, case-sensitive name."})
    since = Timestamp(metadata={"description": "Only events with timestamp >= since."})
    until = Timestamp(metadata={"description": "Only events with timestamp < until."})
    archived = fields.Boolean(load_default=False,
                              metadata={"description": "Read the archive instead."})

    @pre_load
    def _drop_empty(self, data: Any, **_: Any) -> Any:
        # URL builders often send unused filters as `?email=&event=`: treat them as not given.
        if hasattr(data, "items"):
            return {key: value for key, value in data.items() if value != ""}
        return data


class AcceptedEventSchema(Schema):
    """The 202 answer to a tracked event."""

    id = fields.String(metadata={"description": "`evt_...`; sorts by creation time."})
    event = fields.String()
    email = Email()
    properties = FlatProperties()
    timestamp = Timestamp()
    createdAt = Timestamp()
    status = fields.String(metadata={"description": "Always `queued`."})


class EventItemSchema(Schema):
    """A stored event."""

    id = fields.String()
    event = fields.String()
    name = fields.String(metadata={"description": "Same as `event`."})
    contactId = fields.String()
    email = Email()
    properties = FlatProperties()
    timestamp = Timestamp()
    createdAt = Timestamp()
    source = fields.String(metadata={"description": "`api` or `system`."})


class EventPageSchema(Schema):
    """A page of events, newest first."""

    data = fields.List(fields.Nested(EventItemSchema))
    nextCursor = fields.String(allow_none=True)


class ItemErrorSchema(Schema):
    """Why one batch item was refused."""

    code = fields.String()
    message = fields.String()
    details = fields.Dict()


class BatchResultSchema(AcceptedEventSchema):
    """One item's outcome: the accepted event (as `POST /api/events` answers), or `error`."""

    error = fields.Nested(ItemErrorSchema)


class BatchAnswerSchema(Schema):
    """One result per item, in the order sent."""

    results = fields.List(fields.Nested(BatchResultSchema))
    data = fields.List(fields.Nested(BatchResultSchema),
                       metadata={"description": "Same list as `results`."})
    accepted = fields.Integer()
    rejected = fields.Integer()


class EventStreamQuery(StrictSchema):
    """`GET /api/events/stream` filters and credentials (for clients that cannot send headers)."""

    email = Email(metadata={"description": "Only this contact's events."})
    event = fields.String(validate=_EVENT_NAME,
                          metadata={"description": "Exact, case-sensitive name."})
    token = fields.String(validate=validate.Length(min=1, max=1000),
                          metadata={"description": "A stream token from "
                                                   "`POST /api/events/stream/token`, instead of "
                                                   "the `Authorization` header."})
    lastEventId = fields.String(validate=validate.Length(min=1, max=100),
                                metadata={"description": "Resume after this event id (as the "
                                                         "`Last-Event-ID` header does)."})

    @pre_load
    def _drop_empty(self, data: Any, **_: Any) -> Any:
        if hasattr(data, "items"):
            return {key: value for key, value in data.items() if value != ""}
        return data


class StreamTokenSchema(Schema):
    """A short-lived token that opens the live feed (`?token=`)."""

    token = fields.String()
    expiresAt = fields.String(metadata={"description": "The token opens streams until then."})

"""Event request schemas (these validate, and the OpenAPI document is generated from them)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import post_load
from marshmallow import pre_load
from marshmallow import validate
from marshmallow import validates_schema

from app.schemas.common import PageQuery
from app.schemas.common import StrictSchema
from app.schemas.fields import Email
from app.schemas.fields import FlatProperties
from app.schemas.fields import Timestamp
from app.timeutil import utcnow

SYSTEM_EVENT_PREFIX = "email."
MAX_EVENT_NAME_LENGTH = 200
MAX_BATCH_EVENTS = 500
MAX_FUTURE_SKEW = timedelta(days=1)


class TrackEventSchema(StrictSchema):
    """`POST /api/events`: who (`email` or `contactId`), what (`event`, alias `name`), details."""

    email = Email(metadata={"description": "The contact's e-mail; created if unknown."})
    contactId = fields.String(validate=validate.Length(min=1, max=40),
                              metadata={"description": "Wins over `email` when both are given."})
    event = fields.String(validate=validate.Length(min=1, max=MAX_EVENT_NAME_LENGTH),
                          metadata={"description": "Case-sensitive; `email.*` is reserved."})
    name = fields.String(validate=validate.Length(min=1, max=MAX_EVENT_NAME_LENGTH),
                         metadata={"description": "Alias of `event`."})
    properties = FlatProperties(load_default=dict,
                                metadata={"description": "Flat: string, number or boolean values."})
    timestamp = Timestamp(metadata={"description": "ISO 8601; defaults to now; may be back-dated."})

    @pre_load
    def _alias_name(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and "event" not in data and "name" in data:
            data = dict(data)
            data["event"] = data.pop("name")
        return data

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        name = data.get("event")
        if name is None:
            raise ValidationError("The 'event' field is required.", field_name="event")
        if name.startswith(SYSTEM_EVENT_PREFIX):
            raise ValidationError(
                f"Event names starting with '{SYSTEM_EVENT_PREFIX}' are system events, "
                "created only by Kraiter; choose another name.", field_name="event")
        if not data.get("email") and not data.get("contactId"):
            raise ValidationError("Give 'email' or 'contactId'.", field_name="email")
        timestamp = data.get("timestamp")
        if timestamp is not None and timestamp > utcnow() + MAX_FUTURE_SKEW:
            raise ValidationError("Must not be more than a day in the future.",
                                  field_name="timestamp")

    @post_load
    def _drop_alias(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data.pop("name", None)
        return data


class TrackBatchSchema(StrictSchema):
    """`POST /api/events/batch`: up to 500 event bodies, each validated on its own."""

    events = fields.List(fields.Dict(), required=True,
                         validate=validate.Length(min=1, max=MAX_BATCH_EVENTS),
                         metadata={"description": "Items as in `POST /api/events`."})


class EventListQuery(PageQuery):
    """`GET /api/events` filters."""

    email = Email()
    contactId = fields.String()
    event = fields.String(validate=validate.Length(min=1, max=MAX_EVENT_NAME_LENGTH),
                          metadata={"description": "Exact, case-sensitive name."})
    since = Timestamp(metadata={"description": "Only events with timestamp >= since."})
    until = Timestamp(metadata={"description": "Only events with timestamp < until."})
    archived = fields.Boolean(load_default=False,
                              metadata={"description": "Read the archive instead."})


class AcceptedEventSchema(Schema):
    """The 202 answer to a tracked event."""

    id = fields.String()
    event = fields.String()
    email = fields.String()
    contactId = fields.String(allow_none=True)
    properties = fields.Dict()
    timestamp = fields.String()
    createdAt = fields.String()
    status = fields.String(metadata={"description": "Always `queued`."})


class EventItemSchema(Schema):
    """A stored event."""

    id = fields.String()
    event = fields.String()
    name = fields.String(metadata={"description": "Same as `event`."})
    contactId = fields.String()
    email = fields.String()
    properties = fields.Dict()
    timestamp = fields.String()
    createdAt = fields.String()
    source = fields.String(metadata={"description": "`api` or `system`."})


class EventPageSchema(Schema):
    data = fields.List(fields.Nested(EventItemSchema))
    nextCursor = fields.String(allow_none=True)


class BatchResultSchema(Schema):
    """One item's outcome: the accepted event, or an error envelope body."""

    id = fields.String()
    error = fields.Dict()


class BatchAnswerSchema(Schema):
    results = fields.List(fields.Nested(BatchResultSchema))
    data = fields.List(fields.Nested(BatchResultSchema),
                       metadata={"description": "Same list as `results`."})
    accepted = fields.Integer()
    rejected = fields.Integer()

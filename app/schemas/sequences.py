"""Sequence and enrolment schemas (they validate; the OpenAPI document comes from them)."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate
from marshmallow import validates_schema

from app.schemas.common import PageQuery
from app.schemas.common import StrictSchema
from app.schemas.fields import Email
from app.schemas.fields import storable_text
from app.services.enrolments import STATUSES as ENROLMENT_STATUSES
from app.services.sequences import STATUSES as SEQUENCE_STATUSES

SEQUENCE_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
SEQUENCE_ID_RULE = "1-200 characters: letters, digits, `-`, `_` and `.`."
MAX_DEFINITION_CHARS = 64 * 1024


def valid_sequence_id(value: str) -> bool:
    """Whether `value` may be a sequence id (client-chosen slug)."""
    return SEQUENCE_ID.fullmatch(value) is not None


class _Text(fields.String):
    """A string the database can store (no NUL characters, no lone surrogates)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        storable_text(text)
        return text


class _Triggers(fields.Field[Any]):
    """The request's `triggers` list, checked in depth by the definition parser."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is not None and not isinstance(value, list):
            raise ValidationError("Must be a list of triggers.")
        return value


class SequencePutSchema(StrictSchema):
    """`PUT /api/sequences/:id`: name, YAML or JSON definition, optional triggers."""

    id = fields.String(metadata={"description": "Optional; must equal the path's id."})
    name = _Text(required=True, validate=validate.Length(min=1, max=200))
    definition = _Text(required=True, validate=validate.Length(min=1, max=MAX_DEFINITION_CHARS),
                       metadata={"description": "YAML or JSON, in any documented dialect."})
    triggers = _Triggers(load_default=None, allow_none=True, metadata={
        "description": "`[{event, conditions?}]` or `[{type: event, eventName}]`; when "
                       "non-empty, replaces the definition's trigger."})


class SequenceListQuery(PageQuery):
    """`GET /api/sequences`: a page in id order, optionally one status."""

    status = fields.String(load_default=None, validate=validate.OneOf(SEQUENCE_STATUSES))


class SequenceSchema(Schema):
    """A sequence."""

    id = fields.String()
    name = fields.String()
    status = fields.String(metadata={"description": "draft | active | paused | archived"})
    definition = fields.String(metadata={"description": "The definition as given."})
    triggers = fields.List(fields.Dict(), metadata={"description": "Effective triggers."})
    version = fields.Integer()
    createdAt = fields.String()
    updatedAt = fields.String()


class SequencePageSchema(Schema):
    data = fields.List(fields.Nested(SequenceSchema))
    nextCursor = fields.String(allow_none=True)


class EnrolRequestSchema(StrictSchema):
    """`POST /api/sequences/:id/enrolments`: the contact, by e-mail or id."""

    email = Email(metadata={"description": "Created as a contact if new."})
    contactId = fields.String(validate=[validate.Length(min=1, max=320), storable_text])

    @validates_schema
    def _one_contact(self, data: dict[str, Any], **_: Any) -> None:
        if ("email" in data) == ("contactId" in data):
            message = "Give exactly one of `email` and `contactId`."
            raise ValidationError({"email": [message], "contactId": [message]})


class EnrolmentListQuery(PageQuery):
    """Enrolment listings: newest first, optionally one status."""

    status = fields.String(load_default=None, validate=validate.OneOf(ENROLMENT_STATUSES))


class EnrolmentSchema(Schema):
    """An enrolment."""

    id = fields.String()
    sequenceId = fields.String()
    contactId = fields.String()
    status = fields.String(metadata={"description": "active | completed | exited | failed"})
    currentStep = fields.Integer()
    nextStepAt = fields.String(allow_none=True)
    exitReason = fields.String(allow_none=True)
    createdAt = fields.String()
    updatedAt = fields.String()


class EnrolmentPageSchema(Schema):
    data = fields.List(fields.Nested(EnrolmentSchema))
    nextCursor = fields.String(allow_none=True)


class ScheduledQuery(PageQuery):
    """`GET /api/scheduled`: pending steps, earliest first."""

    sequenceId = fields.String(load_default=None)


class ScheduledSchema(Schema):
    """A pending step of an active enrolment."""

    id = fields.String()
    enrolmentId = fields.String()
    contactId = fields.String()
    email = fields.String(allow_none=True)
    sequenceId = fields.String()
    step = fields.Integer()
    action = fields.String(metadata={"description": "email | delay | condition | wait | "
                                                    "complete"})
    templateId = fields.String()
    scheduledFor = fields.String()


class ScheduledPageSchema(Schema):
    data = fields.List(fields.Nested(ScheduledSchema))
    nextCursor = fields.String(allow_none=True)

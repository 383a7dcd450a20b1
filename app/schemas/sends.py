"""Send request schemas (these validate, and the OpenAPI document is generated from them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import ClassVar

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import post_load
from marshmallow import pre_load
from marshmallow import validate
from marshmallow import validates_schema

from app.schemas.common import PageQuery
from app.schemas.common import StrictSchema
from app.schemas.contacts import JSONBoolean
from app.schemas.fields import Email
from app.schemas.fields import Timestamp
from app.schemas.fields import storable_text
from app.services.sending import API_STATUSES

MAX_TEMPLATE_ID_LENGTH = 200
_TEMPLATE_ID: list[Callable[[Any], Any]] = [
    validate.Length(min=1, max=MAX_TEMPLATE_ID_LENGTH), storable_text]


def _check_storable(value: Any, path: str) -> None:
    """Every string (keys too) must be storable: one NUL would fail the send in the database."""
    if isinstance(value, str):
        try:
            storable_text(value)
        except ValidationError as error:
            raise ValidationError({path: error.messages}) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            _check_storable(key, where)
            _check_storable(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, f"{path}[{index}]")


class Variables(fields.Dict):
    """A JSON object of any values (nested objects and arrays too: Liquid loops over them)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any
                     ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValidationError("Must be an object.")
        _check_storable(value, "")
        return dict(value)


class SendRequestSchema(StrictSchema):
    """`POST /api/send`: one transactional e-mail to `to` from template `templateId`."""

    to = Email(required=True, metadata={"description": "Recipient; an unknown address creates "
                                                       "the contact."})
    # Optional fields accept null as "not given": SDKs often serialise unset options that way.
    templateId = fields.String(validate=_TEMPLATE_ID, allow_none=True,
                               metadata={"description": "The template's id (or give `template`)."})
    template = fields.String(validate=_TEMPLATE_ID, allow_none=True,
                             metadata={"description": "Alias of `templateId` (the guides' name); "
                                                      "`templateId` wins if both."})
    variables = Variables(load_default=dict, allow_none=True,
                          metadata={"description": "Liquid data for this e-mail, under "
                                                   "`variables` and at the top level."})
    ignoreUnsubscribe = JSONBoolean(load_default=False, allow_none=True,
                                    metadata={"description": "Send even if the contact "
                                                             "unsubscribed (mail the recipient "
                                                             "must get). Suppressed contacts "
                                                             "are never sent to."})

    openapi_extra: ClassVar[dict[str, Any]] = {
        "anyOf": [{"required": ["templateId"]}, {"required": ["template"]}]}

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _check(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        if isinstance(original, dict) and original.get("templateId") is None and \
                original.get("template") is None:
            raise ValidationError({"templateId": ["Missing data for required field."]})

    @post_load
    def _resolve_alias(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        alias = data.pop("template", None)
        data["templateId"] = data.get("templateId") or alias
        data["variables"] = data.get("variables") or {}
        data["ignoreUnsubscribe"] = bool(data.get("ignoreUnsubscribe"))
        return data


class SendListQuery(PageQuery):
    """`GET /api/sends` filters."""

    status = fields.String(validate=validate.OneOf(API_STATUSES),
                           metadata={"description": " | ".join(API_STATUSES)})
    contactId = fields.String(validate=storable_text,
                              metadata={"description": "Only this contact's sends (its e-mail "
                                                       "works too)."})
    templateId = fields.String(validate=_TEMPLATE_ID,
                               metadata={"description": "Only sends of this template."})

    @pre_load
    def _drop_empty(self, data: Any, **_: Any) -> Any:
        # URL builders often send unused filters as `?status=`: treat them as not given.
        if hasattr(data, "items"):
            return {key: value for key, value in data.items() if value != ""}
        return data


class AcceptedSendSchema(Schema):
    """The 202 answer to `POST /api/send`."""

    id = fields.String(metadata={"description": "`snd_...`; sorts by creation time."})
    to = fields.String()
    templateId = fields.String()
    status = fields.String(metadata={"description": "Always `queued`."})
    createdAt = Timestamp()


class SendSchema(Schema):
    """One e-mail to one contact and what became of it."""

    id = fields.String()
    contactId = fields.String()
    email = fields.String()
    templateId = fields.String()
    templateVersion = fields.Integer(allow_none=True,
                                     metadata={"description": "The version rendered."})
    subject = fields.String(allow_none=True, metadata={"description": "As rendered; null until "
                                                                      "then."})
    status = fields.String(metadata={"description": " | ".join(API_STATUSES)})
    source = fields.String(metadata={"description": "`transactional` or `sequence`."})
    sourceId = fields.String(allow_none=True, metadata={"description": "The sequence's id."})
    sentAt = Timestamp(allow_none=True)
    deliveredAt = Timestamp(allow_none=True)
    openedAt = Timestamp(allow_none=True)
    clickedAt = Timestamp(allow_none=True)
    bounceType = fields.String(allow_none=True, metadata={"description": "`hard` or `soft`."})
    error = fields.String(allow_none=True,
                          metadata={"description": "Why it bounced, failed or was rejected; "
                                                   "the last temporary failure while queued."})
    attempts = fields.Integer(metadata={"description": "Transport attempts so far."})
    createdAt = Timestamp()


class SendPageSchema(Schema):
    """A page of sends, newest first."""

    data = fields.List(fields.Nested(SendSchema))
    nextCursor = fields.String(allow_none=True)

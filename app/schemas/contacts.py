"""Contact request schemas (these validate, and the OpenAPI document is generated from them)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import post_load
from marshmallow import pre_load
from marshmallow import validate

from app.schemas.common import PageQuery
from app.schemas.common import StrictSchema
from app.schemas.fields import MAX_EMAIL_LENGTH
from app.schemas.fields import Email
from app.schemas.fields import FlatProperties

_PROPERTIES_HELP = ("Flat: string, number or boolean values; a null value removes the key "
                    "(on create it is ignored).")


class JSONBoolean(fields.Boolean):
    """A JSON `true`/`false` only: `1`, `"yes"` and friends are type errors, not booleans."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class QueryBoolean(fields.Boolean):
    """A query-string flag spelt `true` or `false` (any case); anything else is a 400."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        text = value.strip().lower() if isinstance(value, str) else None
        if text not in ("true", "false"):
            raise ValidationError("Must be `true` or `false`.")
        return text == "true"


def _without_nulls(properties: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in properties.items() if value is not None}


class _SubscriptionBody(StrictSchema):
    """Takes the guides' `unsubscribed` as well as `subscribed`; both given must agree."""

    unsubscribed = JSONBoolean(load_only=True, metadata={
        "description": "The guides' spelling: `unsubscribed: true` is `subscribed: false`."})

    @pre_load
    def _unsubscribed_alias(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, dict) or "unsubscribed" not in data:
            return data
        data = dict(data)
        unsubscribed = data.pop("unsubscribed")
        if not isinstance(unsubscribed, bool):
            raise ValidationError({"unsubscribed": ["Not a valid boolean."]})
        if "subscribed" in data and data["subscribed"] is unsubscribed:
            raise ValidationError({"unsubscribed": ["Contradicts `subscribed`."]})
        data["subscribed"] = not unsubscribed
        return data


class ContactCreateSchema(_SubscriptionBody):
    """`POST /api/contacts`: a new contact; nulls in `properties` are simply left out."""

    email = Email(required=True, metadata={"description": "Domain lower-cased; local part kept."})
    properties = FlatProperties(allow_null_values=True, load_default=dict,
                                metadata={"description": _PROPERTIES_HELP})
    subscribed = JSONBoolean(load_default=True,
                             metadata={"description": "False records an unsubscribed contact."})

    @post_load
    def _drop_nulls(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["properties"] = _without_nulls(data["properties"])
        return data


class ContactChangeSchema(_SubscriptionBody):
    """`PATCH /api/contacts/:id`: properties merged (null removes a key), `subscribed` set."""

    properties = FlatProperties(allow_null_values=True, load_default=dict,
                                metadata={"description": _PROPERTIES_HELP})
    subscribed = JSONBoolean(metadata={"description": "Left as it is when absent."})


class ContactPutSchema(ContactChangeSchema):
    """`PUT /api/contacts/:email`: create or merge; a body `email` must match the path's."""

    email = Email(metadata={"description": "Optional; must equal the path's e-mail."})


class ContactUpsertSchema(ContactChangeSchema):
    """`POST /api/contacts/upsert`: create the contact, or merge into the existing one."""

    email = Email(required=True, metadata={"description": "Domain lower-cased; local part kept."})


class ContactListQuery(PageQuery):
    """`GET /api/contacts` filters."""

    search = fields.String(validate=validate.Length(max=MAX_EMAIL_LENGTH),
                           metadata={"description": "Case-insensitive partial e-mail match."})
    suppressed = QueryBoolean(metadata={"description": "`true` or `false`."})
    unsubscribed = QueryBoolean(metadata={"description": "`true` or `false`."})


class ContactSchema(Schema):
    """A contact."""

    id = fields.String(metadata={"description": "`cnt_` + ULID."})
    email = fields.String()
    properties = fields.Dict()
    subscribed = fields.Boolean()
    unsubscribed = fields.Boolean(metadata={"description": "Always `not subscribed`."})
    suppressed = fields.Boolean(metadata={"description": "Hard bounce or complaint."})
    createdAt = fields.String()
    updatedAt = fields.String()


class ContactPageSchema(Schema):
    data = fields.List(fields.Nested(ContactSchema))
    nextCursor = fields.String(allow_none=True)

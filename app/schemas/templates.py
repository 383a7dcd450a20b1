"""Template request and response schemas (they validate; the OpenAPI document comes from them)."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import post_load
from marshmallow import validate
from marshmallow import validates_schema

from app.schemas.common import PageQuery
from app.schemas.common import StrictSchema
from app.schemas.fields import Email
from app.schemas.fields import FlatProperties
from app.schemas.fields import storable_text

TEMPLATE_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
TEMPLATE_ID_RULE = "1-200 characters: letters, digits, `-`, `_` and `.`."


def valid_template_id(value: str) -> bool:
    """Whether `value` may be a template id (client-chosen slug)."""
    return TEMPLATE_ID.fullmatch(value) is not None


class _Text(fields.String):
    """A string the database can store (no NUL characters, no lone surrogates)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        storable_text(text)
        return text


class TemplatePutSchema(StrictSchema):
    """`PUT /api/templates/:id`: the whole template; exactly one of `html` and `mjml`."""

    id = fields.String(metadata={"description": "Optional; must equal the path's id."})
    name = _Text(required=True, validate=validate.Length(min=1, max=200))
    subject = _Text(required=True, validate=validate.Length(min=1, max=2000),
                    metadata={"description": "Liquid."})
    html = _Text(allow_none=True, load_default=None,
                 metadata={"description": "Liquid HTML body (variables are HTML-escaped)."})
    mjml = _Text(allow_none=True, load_default=None,
                 metadata={"description": "Liquid MJML body, compiled to HTML after Liquid."})
    text = _Text(allow_none=True, load_default=None,
                 metadata={"description": "Liquid plain-text part; derived from the HTML "
                                          "when absent or empty."})
    variables = fields.List(fields.String(), metadata={
        "description": "Accepted for compatibility and ignored: the template's `variables` are "
                       "read from its Liquid."})

    @validates_schema
    def _one_body(self, data: dict[str, Any], **_: Any) -> None:
        given = [name for name in ("html", "mjml") if data.get(name) is not None]
        if len(given) != 1:
            message = ("Give exactly one of `html` and `mjml`." if given
                       else "A body is required: `html` or `mjml`.")
            raise ValidationError({"html": [message], "mjml": [message]})

    @post_load
    def _tidy(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data.pop("variables", None)
        if not data.get("text"):
            data["text"] = None  # an empty text part means "derive it from the HTML"
        return data


class InlineContactSchema(StrictSchema):
    """A contact that exists only for this preview."""

    email = Email(required=True)
    properties = FlatProperties(load_default=dict)


class PreviewContact(fields.Field[Any]):
    """An inline `{email, properties}` object, or the id or e-mail of a stored contact."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            if not value or len(value) > 320:
                raise ValidationError("Must be a contact id or e-mail.")
            return value
        if isinstance(value, dict):
            return InlineContactSchema().load(value)
        raise ValidationError("Must be a contact id or e-mail, or an object {email, properties}.")


class PreviewSchema(StrictSchema):
    """`POST /api/templates/:id/preview`: who and what to render with; nothing is stored."""

    contact = PreviewContact(allow_none=True, load_default=None, metadata={
        "description": "A stored contact's id or e-mail, or an inline {email, properties}."})
    variables = fields.Dict(keys=fields.String(), load_default=dict,
                            metadata={"description": "As in `POST /api/send`."})
    event = fields.Dict(keys=fields.String(), allow_none=True, load_default=None, metadata={
        "description": "The enrolling event, shaped like an event item."})


class TemplateListQuery(PageQuery):
    """`GET /api/templates`: a page of templates in id order."""


class TemplateSchema(Schema):
    """A template."""

    id = fields.String()
    name = fields.String()
    subject = fields.String()
    html = fields.String(allow_none=True)
    mjml = fields.String(allow_none=True)
    text = fields.String(allow_none=True)
    variables = fields.List(fields.String(), metadata={
        "description": "Context paths the Liquid reads (best effort), e.g. `contact.email`."})
    version = fields.Integer(metadata={"description": "1 on creation; +1 on each change."})
    createdAt = fields.String()
    updatedAt = fields.String()


class TemplatePageSchema(Schema):
    data = fields.List(fields.Nested(TemplateSchema))
    nextCursor = fields.String(allow_none=True)


class PreviewResultSchema(Schema):
    """A rendered preview (no tracking; `unsubscribeUrl` is a placeholder)."""

    subject = fields.String()
    html = fields.String()
    text = fields.String()

"""The OpenAPI 3 document, generated from the schemas that validate requests."""

from __future__ import annotations

import functools
import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow import resolver
from marshmallow import fields

from app.api.blueprint import OPERATIONS
from app.api.blueprint import Operation
from app.api.idempotency import KEYED_OPERATIONS
from app.api.idempotency import MAX_KEY_LENGTH
from app.schemas.fields import MAX_PROPERTIES
from app.schemas.fields import MAX_PROPERTY_KEY_LENGTH
from app.schemas.fields import MAX_STRING_VALUE_LENGTH
from app.schemas.fields import Email
from app.schemas.fields import FlatProperties
from app.schemas.fields import Timestamp

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "object"}}}},
}

ERROR_REF = {"$ref": "#/components/schemas/Error"}

IDEMPOTENCY_KEY_PARAMETER = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "description": "A retry with the same key within 24 h gets the first answer and stores "
                   "nothing new; the same key with a different body is a 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}


def _custom_fields(self: Any, field: fields.Field[Any], **_: Any) -> dict[str, Any]:
    """OpenAPI for our own field types (bound to apispec's converter as an attribute function)."""
    if isinstance(field, FlatProperties):
        values: list[dict[str, Any]] = [{"type": "string", "maxLength": MAX_STRING_VALUE_LENGTH},
                                        {"type": "number"}, {"type": "boolean"}]
        value_schema: dict[str, Any] = {"oneOf": values}
        if field.allow_null_values:
            value_schema["nullable"] = True
        # OpenAPI 3.0 cannot bound key length (no `propertyNames`): an extension says it.
        return {"type": "object", "maxProperties": MAX_PROPERTIES,
                "additionalProperties": value_schema, "x-maxKeyLength": MAX_PROPERTY_KEY_LENGTH}
    # A raw list item that the view validates with another schema (batch items) is documented
    # as that schema.
    item_schema = field.metadata.get("openapi_schema")
    if item_schema is not None:
        return dict(self.resolve_nested_schema(item_schema))
    return {}


def _operation(op: Operation) -> dict[str, Any]:
    spec: dict[str, Any] = {"summary": op.summary, "tags": [op.tag], "responses": {
        str(op.status): {"description": "OK" if op.status < 300 else "",
                         "content": {op.media_type: {"schema": op.response or {}}}},
        "default": {"description": "Error envelope",
                    "content": {"application/json": {"schema": ERROR_REF}}},
    }}
    if op.body is not None:
        spec["requestBody"] = {"required": True,
                               "content": {"application/json": {"schema": op.body}}}
    if op.query is not None:
        spec["parameters"] = [{"in": "query", "schema": op.query}]
    for name in re.findall(r"{(\w+)}", op.path):  # every path parameter, not just the first
        spec.setdefault("parameters", []).append(
            {"in": "path", "name": name, "required": True, "schema": {"type": "string"}})
    if (op.path, op.method) in KEYED_OPERATIONS:
        spec.setdefault("parameters", []).append(IDEMPOTENCY_KEY_PARAMETER)
    if op.auth:
        spec["security"] = [{"apiKey": []}]
    return spec


def _register_body_schemas(spec: APISpec) -> None:
    """Register request schemas first, adding the rules fields cannot express (`openapi_extra`)."""
    for body in (op.body for op in OPERATIONS if op.body is not None):
        name = resolver(body)
        if name not in spec.components.schemas:
            spec.components.schema(name, getattr(body, "openapi_extra", None), schema=body)


@functools.cache
def build_spec() -> dict[str, Any]:
    """The whole document (built once per process)."""
    plugin = MarshmallowPlugin()
    spec = APISpec(title="Kraiter API", version="1.0.0", openapi_version="3.0.3",
                   plugins=[plugin], servers=[{"url": "/api"}])
    plugin.converter.map_to_openapi_type(Email, "string", "email")  # type: ignore[union-attr]
    plugin.converter.map_to_openapi_type(Timestamp, "string", "date-time")  # type: ignore[union-attr]
    plugin.converter.add_attribute_function(_custom_fields)  # type: ignore[union-attr]
    spec.components.security_scheme("apiKey", {"type": "http", "scheme": "bearer",
                                               "description": "An API key: kr_..."})
    spec.components.schema("Error", ERROR_SCHEMA)
    _register_body_schemas(spec)
    by_path: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        by_path.setdefault(op.path, {})[op.method] = _operation(op)
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()

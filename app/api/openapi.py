"""The OpenAPI 3 document, generated from the schemas that validate requests."""

from __future__ import annotations

import functools
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from app.api.blueprint import OPERATIONS
from app.api.blueprint import Operation

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "object"}}}},
}


def _operation(op: Operation) -> dict[str, Any]:
    spec: dict[str, Any] = {"summary": op.summary, "tags": [op.tag], "responses": {
        str(op.status): {"description": "OK" if op.status < 300 else "",
                         "content": {"application/json": {"schema": op.response or {}}}},
        "default": {"description": "Error envelope",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    }}
    if op.body is not None:
        spec["requestBody"] = {"required": True,
                               "content": {"application/json": {"schema": op.body}}}
    if op.query is not None:
        spec["parameters"] = [{"in": "query", "schema": op.query}]
    if "{" in op.path:
        name = op.path.split("{", 1)[1].split("}", 1)[0]
        spec.setdefault("parameters", []).append(
            {"in": "path", "name": name, "required": True, "schema": {"type": "string"}})
    if op.auth:
        spec["security"] = [{"apiKey": []}]
    return spec


@functools.cache
def build_spec() -> dict[str, Any]:
    """The whole document (built once per process)."""
    spec = APISpec(title="Kraiter API", version="1.0.0", openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   servers=[{"url": "/api"}])
    spec.components.security_scheme("apiKey", {"type": "http", "scheme": "bearer",
                                               "description": "An API key: kr_..."})
    spec.components.schema("Error", ERROR_SCHEMA)
    by_path: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        by_path.setdefault(op.path, {})[op.method] = _operation(op)
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()

"""The API blueprint and the registry the OpenAPI document is generated from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint
from marshmallow import Schema

api = Blueprint("api", __name__)
# Unauthenticated pages and hooks that live outside /api (tracking, unsubscribe, webhooks).
public = Blueprint("public", __name__)


@dataclass(frozen=True)
class Operation:
    """One documented operation: the schemas that validate it and the one that describes it."""

    path: str
    method: str
    summary: str
    tag: str
    status: int
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    response: type[Schema] | None = None
    auth: bool = True
    media_type: str = "application/json"


OPERATIONS: list[Operation] = []


def document(path: str, method: str, summary: str, *, tag: str, status: int = 200,
             **schemas: Any) -> None:
    """Record an operation for `/api/openapi.json`."""
    OPERATIONS.append(Operation(path, method.lower(), summary, tag, status, **schemas))

"""API key listing (`GET /api/keys`): what a key may see of its tenant's keys, never a raw key."""

from __future__ import annotations

from marshmallow import Schema
from marshmallow import fields


class ApiKeySchema(Schema):
    id = fields.String(metadata={"description": "`key_...`"})
    keyId = fields.String(metadata={"description": "The same id, as the guides name it."})
    name = fields.String()
    keyPrefix = fields.String(metadata={"description": "The first characters of the raw key."})
    createdAt = fields.String()
    revokedAt = fields.String(allow_none=True)


class ApiKeyPageSchema(Schema):
    data = fields.List(fields.Nested(ApiKeySchema))
    nextCursor = fields.String(allow_none=True)

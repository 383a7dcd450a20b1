"""Shapes shared by every list endpoint, and the JSON body reader."""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from flask import Request
from marshmallow import RAISE
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate

from app.errors import BadRequest
from app.errors import PayloadTooLarge
from app.schemas.fields import storable_text

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class StrictSchema(Schema):
    """Request bodies: unknown fields are an error, so typos do not pass silently."""

    class Meta:
        unknown = RAISE


class PageQuery(Schema):
    """`limit` and `cursor` of every list endpoint."""

    limit = fields.Integer(load_default=DEFAULT_LIMIT,
                           validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = fields.String(load_default=None)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # `1e400` parses to infinity, which JSON cannot carry back out and the database refuses.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def read_json_body(request: Request, *, max_bytes: int) -> Any:
    """Parse the body as JSON (whatever the Content-Type), refusing NaN/Infinity and big bodies."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes.")
    raw = request.get_data(cache=True)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes.")
    if not raw.strip():
        raise BadRequest("Request body must be a JSON object.")
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"Malformed JSON: {error}") from None
    except RecursionError:
        raise BadRequest("Malformed JSON: nested too deeply.") from None


def read_json_object(request: Request, *, max_bytes: int) -> dict[str, Any]:
    """Like `read_json_body`, but the top level must be an object."""
    body = read_json_body(request, max_bytes=max_bytes)
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object.")
    return body


def encode_cursor(values: dict[str, Any]) -> str:
    """An opaque cursor: base64url of compact JSON."""
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, required_keys: tuple[str, ...]) -> dict[str, Any]:
    """Decode a cursor made by `encode_cursor`; a tampered one is a validation error on `cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        values = None
    if not isinstance(values, dict) or any(
        not isinstance(values.get(key), str) for key in required_keys
    ):
        raise ValidationError({"cursor": ["Not a valid cursor."]})
    try:  # a forged cursor must not carry text the database refuses as a parameter
        for key in required_keys:
            storable_text(values[key])
    except ValidationError:
        raise ValidationError({"cursor": ["Not a valid cursor."]}) from None
    return values

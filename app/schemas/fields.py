"""Reusable marshmallow fields: e-mail addresses, flat property maps, ISO timestamps, cursors."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError
from email_validator import validate_email
from marshmallow import ValidationError
from marshmallow import fields

from app.timeutil import parse_iso
from app.timeutil import truncate_ms

MAX_PROPERTIES = 100
MAX_PROPERTY_KEY_LENGTH = 100
MAX_STRING_VALUE_LENGTH = 2000
MAX_EMAIL_LENGTH = 320


@functools.lru_cache(maxsize=65536)
def normalise_email(value: str) -> str:
    """Validate syntax (no DNS) and lower-case the domain; raise ValidationError if invalid."""
    if len(value) > MAX_EMAIL_LENGTH:
        raise ValidationError("Not a valid e-mail address: too long.")
    try:
        # test_environment lets `.test` domains through (self-hosters test with them);
        # globally_deliverable=False keeps this a syntax check, as the contract asks.
        result = validate_email(value, check_deliverability=False, test_environment=True,
                                globally_deliverable=False)
    except EmailNotValidError as error:
        raise ValidationError(f"Not a valid e-mail address: {error}") from None
    return result.normalized


class Email(fields.String):
    """An e-mail address, returned normalised."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        return normalise_email(text)


def _check_property_value(key: str, value: Any, *, allow_null: bool) -> str | None:
    if value is None:
        return None if allow_null else "Null is not allowed; use a string, number or boolean."
    if isinstance(value, bool | int | float):
        return None
    if isinstance(value, str):
        if len(value) > MAX_STRING_VALUE_LENGTH:
            return f"String values are limited to {MAX_STRING_VALUE_LENGTH} characters."
        return None
    kind = "objects" if isinstance(value, dict) else "arrays" if isinstance(value, list) else "it"
    return f"Properties must be flat: {kind} cannot be values; use a string, number or boolean."


class FlatProperties(fields.Field):
    """A flat object of string/number/boolean values (null too where `allow_null_values`)."""

    def __init__(self, *, allow_null_values: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allow_null_values = allow_null_values

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any
                     ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValidationError("Must be an object.")
        if len(value) > MAX_PROPERTIES:
            raise ValidationError(f"At most {MAX_PROPERTIES} properties are allowed.")
        errors: dict[str, list[str]] = {}
        for key, item in value.items():
            if not key or len(key) > MAX_PROPERTY_KEY_LENGTH:
                errors[key] = [f"Keys must be 1-{MAX_PROPERTY_KEY_LENGTH} characters."]
                continue
            problem = _check_property_value(key, item, allow_null=self.allow_null_values)
            if problem:
                errors[key] = [problem]
        if errors:
            raise ValidationError(errors)  # type: ignore[arg-type]
        return dict(value)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class Timestamp(fields.Field):
    """ISO 8601 in, aware UTC datetime (millisecond resolution) out; `Z` formatting on dump."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise ValidationError("Must be an ISO 8601 date-time string.")
        try:
            parsed = parse_iso(value)
        except ValueError:
            raise ValidationError("Must be an ISO 8601 date-time, e.g. 2025-09-15T10:30:00.000Z."
                                  ) from None
        return truncate_ms(parsed)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        from app.timeutil import isoformat

        return isoformat(value)

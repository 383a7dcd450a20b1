"""Reusable marshmallow fields: e-mail addresses, flat property maps, ISO timestamps, cursors."""

from __future__ import annotations

import functools
import math
import re
from datetime import datetime
from typing import Any

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from email_validator import EmailNotValidError
from email_validator import validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from email_validator.rfc_constants import DNS_LABEL_LENGTH_LIMIT
from email_validator.rfc_constants import DOMAIN_MAX_LENGTH
from email_validator.rfc_constants import EMAIL_MAX_LENGTH
from marshmallow import ValidationError
from marshmallow import fields

from app.timeutil import isoformat
from app.timeutil import parse_iso
from app.timeutil import truncate_ms

MAX_PROPERTIES = 100
MAX_PROPERTY_KEY_LENGTH = 100
MAX_STRING_VALUE_LENGTH = 2000
MAX_EMAIL_LENGTH = 320
MIN_YEAR = 1000


@functools.lru_cache(maxsize=65536)
def normalise_email(value: str) -> str:
    """Validate syntax (no DNS) and lower-case the domain; raise ValidationError if invalid."""
    if len(value) > MAX_EMAIL_LENGTH:
        raise ValidationError("Not a valid e-mail address: too long.")
    plain = plain_email(value)
    if plain is not None:
        return plain
    try:
        # check_deliverability=False keeps this a syntax check (no DNS), as the contract asks;
        # test_environment lets `.test` domains through (self-hosters test with them). Dotless
        # and reserved domains (`a@b`, `a@localhost`) stay invalid: no mail can reach them.
        result = validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as error:
        raise ValidationError(f"Not a valid e-mail address: {error}") from None
    return result.normalized


# email-validator parses with Unicode in mind and costs ~20 µs an address: as much as all the
# other work on a batch event whose contact is new. `plain_email` settles the common address,
# plain ASCII, in ~1 µs: it answers only when it can prove the address valid, and then exactly what
# email-validator would return (tests/test_ingest_plain_check.py compares the two); anything
# else goes to the library, which also words the errors.
_ATEXT = r"[A-Za-z0-9_!#$%&'*+/=?^`{|}~-]+"
_PLAIN_LOCAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\Z")
_INNER = DNS_LABEL_LENGTH_LIMIT - 2  # a label's characters between its first and last
_LABEL = rf"[a-z0-9](?:[a-z0-9-]{{0,{_INNER}}}[a-z0-9])?"
# At least two labels, the last ending in a letter (email-validator's "globally deliverable").
_PLAIN_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+(?:[a-z0-9][a-z0-9-]{{0,{_INNER}}})?[a-z]\Z")


def plain_email(value: str) -> str | None:
    """`validate_email(value, check_deliverability=False, test_environment=True).normalized`
    for a plain ASCII address it can prove valid; None for anything else."""
    local, _, domain = value.partition("@")
    domain = domain.lower()
    if (len(value) > EMAIL_MAX_LENGTH or len(domain) > DOMAIN_MAX_LENGTH
            or not value.isascii() or "--" in domain  # punycode, and a rule about "ab--"
            or not _PLAIN_LOCAL.match(local) or not _PLAIN_DOMAIN.match(domain)):
        return None
    top_level = domain.rpartition(".")[2]
    if top_level in SPECIAL_USE_DOMAIN_NAMES and top_level != "test":  # test_environment
        return None
    if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:  # RFC 2142: postmaster, abuse, ...
        local = local.lower()
    return f"{local}@{domain}"


def storable_text(value: str) -> None:
    """Refuse text the database cannot store: NUL characters and lone UTF-16 surrogates.

    Events are stored by the worker in batches, so one unstorable string accepted here would make
    a whole batch fail there; JSON allows both (`\\u0000`, `\\ud800`), so check them up front.
    """
    if "\x00" in value:
        raise ValidationError("Must not contain NUL (U+0000) characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Must be valid Unicode text (no lone surrogates).") from None


class Email(fields.String):
    """An e-mail address, returned normalised."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        return normalise_email(text)


def _unstorable(text: str) -> str | None:
    try:
        storable_text(text)
    except ValidationError as error:
        return str(error.messages[0])
    return None


def _check_property_value(value: Any, *, allow_null: bool) -> str | None:
    if value is None:
        return None if allow_null else "Null is not allowed; use a string, number or boolean."
    if isinstance(value, float) and not math.isfinite(value):
        # JSON bodies cannot carry these (read_json_body refuses them); this guards callers that
        # build properties in Python, since the database refuses them too.
        return "Numbers must be finite."
    if isinstance(value, bool | int | float):
        return None
    if isinstance(value, str):
        if len(value) > MAX_STRING_VALUE_LENGTH:
            return f"String values are limited to {MAX_STRING_VALUE_LENGTH} characters."
        return _unstorable(value)
    kind = "objects" if isinstance(value, dict) else "arrays" if isinstance(value, list) else "it"
    return f"Properties must be flat: {kind} cannot be values; use a string, number or boolean."


class FlatProperties(fields.Field[dict[str, Any]]):
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
            problem = _unstorable(key) or _check_property_value(
                item, allow_null=self.allow_null_values)
            if problem:
                errors[key] = [problem]
        if errors:
            raise ValidationError(errors)
        return dict(value)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class Timestamp(fields.Field[datetime]):
    """ISO 8601 in, aware UTC datetime (millisecond resolution) out; `Z` formatting on dump."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise ValidationError("Must be an ISO 8601 date-time string.")
        try:
            parsed = parse_iso(value)
        except (ValueError, OverflowError):  # OverflowError: an offset pushes it past year 1/9999
            parsed = None
        # Four-digit years only: the API formats years with four digits, and SQLite compares
        # stored timestamps as text.
        if parsed is None or parsed.year < MIN_YEAR:
            raise ValidationError("Must be an ISO 8601 date-time, e.g. 2025-09-15T10:30:00.000Z.")
        return truncate_ms(parsed)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return isoformat(value)

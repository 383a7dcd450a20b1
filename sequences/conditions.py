"""Evaluate conditions against a contact and an event. Evaluation never raises.

Semantics (the contract names the operators, not these edge cases):
- A path is missing when a record, the key or its value is absent or null. Then `exists` is
  False, `notExists` True, `notEquals`/`notContains` True and every other operator False.
- `notEquals` and `notContains` are always the exact negation of `equals` and `contains`.
- `equals` is exact for strings (case-sensitive). When either side is a real number, the other
  side may be a numeric string (`"42"` equals `42`). When either side is a boolean, the other
  must be a boolean or the string `true`/`false` in any case; `1` never equals `true`.
- `contains` on a string is a case-insensitive substring test (numbers and booleans in the
  condition are matched by their text); on a list it is membership, strings compared
  case-insensitively. On anything else it is False.
- Ordering operators compare numbers (numeric strings included, booleans excluded), else ISO 8601
  dates/times (a bare date is midnight, a naive time is UTC); anything else is False.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC
from datetime import date
from datetime import datetime
from typing import Any
from typing import Final

from sequences.model import Condition
from sequences.model import Operator
from sequences.model import Scalar

PATH_HELP = "use contact.email, contact.properties.<name>, event.event or event.properties.<name>"

_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NEGATIONS: Final[dict[Operator, Operator]] = {"notEquals": "equals", "notContains": "contains"}


class _Missing:
    """The value of a path that resolves to nothing."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def normalise_path(path: str) -> str | None:
    """Return the canonical spelling of a condition path, or None if it is not one."""
    if path in ("contact.email", "event.event"):
        return path
    if path == "event.name":
        return "event.event"
    for prefix in ("contact.properties.", "event.properties."):
        if path.startswith(prefix) and len(path) > len(prefix):
            return path
    return None


def resolve(path: str, context: Mapping[str, Any]) -> object:
    """Look a path up in `{"contact": {...}, "event": {...} | None}`; MISSING when absent."""
    root, _, rest = path.partition(".")
    record = context.get(root)
    if not isinstance(record, Mapping):
        return MISSING
    value: object
    if root == "event" and rest in ("event", "name"):
        # Stored events call it `name`, API bodies call it `event`: accept either spelling.
        value = record.get("event", record.get("name"))
    elif rest.startswith("properties."):
        properties = record.get("properties")
        if not isinstance(properties, Mapping):
            return MISSING
        value = properties.get(rest.removeprefix("properties."))
    else:
        value = record.get(rest)
    return MISSING if value is None else value


def evaluate(condition: Condition, context: Mapping[str, Any]) -> bool:
    """Tell whether a condition holds for `{"contact": {...}, "event": {...} | None}`."""
    return holds(condition.operator, resolve(condition.path, context), condition.value)


def all_hold(conditions: tuple[Condition, ...], context: Mapping[str, Any]) -> bool:
    """Tell whether every condition holds (True for none)."""
    return all(evaluate(condition, context) for condition in conditions)


def holds(operator: Operator, actual: object, expected: Scalar | None) -> bool:
    """Apply an operator to a resolved value (possibly MISSING) and the condition's value."""
    if operator == "exists":
        return actual is not MISSING
    if operator == "notExists":
        return actual is MISSING
    if operator in _NEGATIONS:
        return not holds(_NEGATIONS[operator], actual, expected)
    if actual is MISSING:
        return False
    if operator == "equals":
        return _equal(actual, expected)
    if operator == "contains":
        return _contains(actual, expected)
    order = _compare(actual, expected)
    if order is None:
        return False
    if operator == "greaterThan":
        return order > 0
    if operator == "lessThan":
        return order < 0
    if operator == "greaterThanOrEquals":
        return order >= 0
    return order <= 0


def as_number(value: object) -> int | float | None:
    """Return a finite number for a number or numeric string (never for a boolean)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        try:
            if _INTEGER.fullmatch(value):
                return int(value)
            number = float(value)
        except ValueError:  # int() refuses more than 4,300 digits: not a number here
            return None
        return number if math.isfinite(number) else None
    return None


def as_instant(value: object) -> datetime | None:
    """Return an aware datetime for a date, datetime or ISO 8601 string (naive means UTC)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and _ISO_DATE.match(value):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _as_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _equal(actual: object, expected: object, *, fold: bool = False) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        left = _as_bool(actual)
        return left is not None and left == _as_bool(expected)
    if isinstance(actual, int | float) or isinstance(expected, int | float):
        number = as_number(actual)
        return number is not None and number == as_number(expected)
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.casefold() == expected.casefold() if fold else actual == expected
    return False


def _text(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _contains(actual: object, expected: object) -> bool:
    if isinstance(actual, str):
        needle = _text(expected)
        return needle is not None and needle.casefold() in actual.casefold()
    if isinstance(actual, list | tuple):
        return any(_equal(item, expected, fold=True) for item in actual)
    return False


def _compare(actual: object, expected: object) -> int | None:
    left_number, right_number = as_number(actual), as_number(expected)
    if left_number is not None and right_number is not None:
        return (left_number > right_number) - (left_number < right_number)
    left_instant, right_instant = as_instant(actual), as_instant(expected)
    if left_instant is not None and right_instant is not None:
        return (left_instant > right_instant) - (left_instant < right_instant)
    return None

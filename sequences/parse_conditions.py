"""Parse conditions: `{property, operator, value}` items and the lists that hold them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from sequences.conditions import PATH_HELP
from sequences.conditions import as_instant
from sequences.conditions import as_number
from sequences.conditions import normalise_path
from sequences.model import OPERATORS
from sequences.model import ORDERING_OPERATORS
from sequences.model import VALUELESS_OPERATORS
from sequences.model import Condition
from sequences.model import Operator
from sequences.model import Scalar
from sequences.reading import At
from sequences.reading import mapping
from sequences.reading import only_keys
from sequences.reading import text

CONDITION_KEYS = ("property", "operator", "value")
_OPERATOR_HELP = ", ".join(OPERATORS)


def read_conditions(raw: object, at: At) -> tuple[Condition, ...]:
    if raw is None:
        return ()
    if isinstance(raw, Mapping) and "conditions" in raw:
        only_keys(raw, ("operator", "conditions"), at)
        if raw.get("operator", "and") != "and":
            at.key("operator").fail("only 'and' is supported: every condition must hold")
        raw = raw["conditions"]
        at = at.key("conditions")
    elif isinstance(raw, Mapping):
        only_keys(raw, CONDITION_KEYS, at)
        condition = read_condition(raw, at)
        return (condition,) if condition is not None else ()
    if not isinstance(raw, list):
        at.fail("expected a list of conditions")
        return ()
    found = []
    for position, item in enumerate(raw):
        here = at.index(position)
        values = mapping(item, here, "a condition mapping with property, operator and value")
        if values is None:
            continue
        only_keys(values, CONDITION_KEYS, here)
        condition = read_condition(values, here)
        found.extend([condition] if condition is not None else [])
    return tuple(found)


def read_condition(values: Mapping[str, object], at: At) -> Condition | None:
    """Read `property`, `operator` and `value` (other keys are the caller's to check)."""
    raw_path = text(values, "property", at)
    path = normalise_path(raw_path) if raw_path is not None else None
    if raw_path is not None and path is None:
        at.key("property").fail(f"unknown path {raw_path!r} ({PATH_HELP})")
    operator = _operator(values.get("operator"), at.key("operator"))
    if operator is None:
        return None
    ok, value = _value(values, operator, at.key("value"))
    if path is None or not ok:
        return None
    return Condition(path, operator, value)


def _operator(raw: object, at: At) -> Operator | None:
    if raw is None:
        at.fail(f"required ({_OPERATOR_HELP})")
        return None
    for operator in OPERATORS:
        if raw == operator:
            return operator
    at.fail(f"unknown operator {raw!r} (use {_OPERATOR_HELP})")
    return None


def _value(values: Mapping[str, object], operator: Operator, at: At) -> tuple[bool, Scalar | None]:
    raw = values.get("value")
    if operator in VALUELESS_OPERATORS:
        if raw is not None:
            at.fail(f"not allowed with operator {operator!r}")
        return raw is None, None
    if raw is None:
        at.fail(f"required with operator {operator!r}")
        return False, None
    if isinstance(raw, date):  # YAML reads `2025-01-01` as a date: keep the text
        raw = raw.isoformat()
    if isinstance(raw, float) and as_number(raw) is None:
        at.fail(f"expected a finite number, got {raw!r}")
        return False, None
    if not isinstance(raw, str | int | float | bool):
        at.fail("expected a string, number or boolean")
        return False, None
    if operator in ORDERING_OPERATORS and as_number(raw) is None and as_instant(raw) is None:
        at.fail(f"{operator!r} needs a number or an ISO 8601 date, got {raw!r}")
        return False, None
    return True, raw

"""Condition evaluation: every operator, missing values, type mismatches; property-based laws."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequences import MISSING
from sequences import OPERATORS
from sequences import Condition
from sequences import Operator
from sequences import evaluate
from sequences import resolve

ABSENT = object()  # leave the property out of the contact altogether


def check(operator: Operator, actual: object, expected: Any = None) -> bool:
    properties = {} if actual is ABSENT else {"p": actual}
    context = {"contact": {"email": "a@example.com", "properties": properties}, "event": None}
    return evaluate(Condition("contact.properties.p", operator, expected), context)


@pytest.mark.parametrize(
    ("operator", "actual", "expected", "result"),
    [
        ("equals", "pro", "pro", True),
        ("equals", "Pro", "pro", False),  # equals is case-sensitive; contains is not
        ("equals", 42, "42", True),  # a number and a numeric string compare as numbers
        ("equals", "42", 42, True),
        ("equals", 42.0, 42, True),
        ("equals", "42", "42.0", False),  # two strings compare as text
        ("equals", "abc", 42, False),
        ("equals", True, True, True),
        ("equals", True, "true", True),
        ("equals", "TRUE", True, True),
        ("equals", False, True, False),
        ("equals", 1, True, False),  # a number is never a boolean
        ("equals", True, 1, False),
        ("equals", "yes", True, False),
        ("equals", ABSENT, "pro", False),
        ("equals", None, "pro", False),  # null is missing
        ("notEquals", "pro", "basic", True),
        ("notEquals", "pro", "pro", False),
        ("notEquals", 42, "42", False),
        ("notEquals", ABSENT, "pro", True),
        ("contains", "Hello World", "WORLD", True),
        ("contains", "Straße", "STRASSE", True),  # case folding, not just lower-casing
        ("contains", "hello", "x", False),
        ("contains", "order 42", 42, True),
        ("contains", "is true", True, True),
        ("contains", ["Pro", "basic"], "pro", True),  # lists: membership
        ("contains", ["pro"], "pr", False),  # membership, not substring of items
        ("contains", [1, 2], "2", True),
        ("contains", [1, 2], 3, False),
        ("contains", 42, "4", False),  # neither text nor list
        ("contains", ABSENT, "x", False),
        ("notContains", "hello", "x", True),
        ("notContains", "Hello", "hell", False),
        ("notContains", 42, "4", True),
        ("notContains", ABSENT, "x", True),
        ("greaterThan", 60, 50, True),
        ("greaterThan", 50, 50, False),
        ("greaterThan", "60", 50, True),
        ("greaterThan", "100", "20", True),  # numeric strings compare as numbers
        ("greaterThan", 50.5, 50, True),
        ("greaterThan", "2025-03-01", "2025-01-01", True),
        ("greaterThan", "2025-01-01T10:00:00Z", "2025-01-01", True),
        ("greaterThan", "2025-01-01T10:00:00+02:00", "2025-01-01T09:00:00Z", False),
        ("greaterThan", "abc", 1, False),
        ("greaterThan", True, 0, False),  # booleans are not numbers
        ("greaterThan", "2025-01-01", 1, False),
        ("greaterThan", ABSENT, 1, False),
        ("lessThan", 40, 50, True),
        ("lessThan", 50, 50, False),
        ("lessThan", "abc", 1, False),
        ("lessThan", ABSENT, 1, False),
        ("greaterThanOrEquals", 50, 50, True),
        ("greaterThanOrEquals", 49.9, 50, False),
        ("greaterThanOrEquals", ABSENT, 1, False),
        ("lessThanOrEquals", 50, "50", True),
        ("lessThanOrEquals", 51, 50, False),
        ("lessThanOrEquals", ABSENT, 1, False),
        ("exists", "x", None, True),
        ("exists", "", None, True),
        ("exists", 0, None, True),
        ("exists", False, None, True),
        ("exists", None, None, False),
        ("exists", ABSENT, None, False),
        ("notExists", ABSENT, None, True),
        ("notExists", None, None, True),
        ("notExists", False, None, False),
    ],
)
def test_operator(operator: Operator, actual: object, expected: Any, result: bool) -> None:
    assert check(operator, actual, expected) is result


def test_paths_resolve_in_the_contact_and_the_event() -> None:
    context = {
        "contact": {"email": "a@example.com", "properties": {"plan": "pro", "a.b": 1}},
        "event": {"name": "purchase.completed", "properties": {"amount": 60}},
    }
    assert resolve("contact.email", context) == "a@example.com"
    assert resolve("contact.properties.plan", context) == "pro"
    # Properties are flat, so a key may itself hold dots.
    assert resolve("contact.properties.a.b", context) == 1
    assert resolve("event.event", context) == "purchase.completed"  # stored events say `name`
    assert resolve("event.name", context) == "purchase.completed"
    assert resolve("event.properties.amount", context) == 60
    assert resolve("event.properties.missing", context) is MISSING
    api_body = {"contact": {}, "event": {"event": "signed_up"}}
    assert resolve("event.event", api_body) == "signed_up"


@pytest.mark.parametrize(
    "context",
    [
        {"contact": {"email": "a@example.com"}, "event": None},  # API enrolment: no event
        {"contact": {"email": "a@example.com", "properties": None}},
        {"contact": "not a mapping", "event": {"properties": "nor this"}},
        {},
    ],
)
def test_unresolvable_paths_are_missing(context: dict[str, Any]) -> None:
    for path in ("event.event", "event.properties.x", "contact.properties.x"):
        assert resolve(path, context) is MISSING
        assert evaluate(Condition(path, "notExists"), context)
        assert evaluate(Condition(path, "notEquals", "x"), context)
        assert not evaluate(Condition(path, "equals", "x"), context)


scalars = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
json_values = st.recursive(
    st.none() | scalars | st.floats(),  # nan and inf too: evaluation must still not raise
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False))
numbers_or_numeric_text = st.one_of(numbers, numbers.map(str))
ascii_text = st.text(alphabet=string.ascii_letters + string.digits + " .-@", max_size=20)


@given(operator=st.sampled_from(OPERATORS), actual=json_values, expected=json_values)
def test_evaluation_never_raises(operator: Operator, actual: object, expected: Any) -> None:
    assert check(operator, actual, expected) in (True, False)


@given(actual=scalars, expected=scalars)
def test_equals_and_not_equals_are_complements(actual: object, expected: Any) -> None:
    assert check("equals", actual, expected) is not check("notEquals", actual, expected)


@given(actual=st.one_of(scalars, st.lists(scalars, max_size=3)), expected=scalars)
def test_contains_and_not_contains_are_complements(actual: object, expected: Any) -> None:
    assert check("contains", actual, expected) is not check("notContains", actual, expected)


@given(actual=st.one_of(st.none(), scalars), expected=scalars)
def test_exists_and_not_exists_are_complements(actual: object, expected: Any) -> None:
    assert check("exists", actual) is not check("notExists", actual)
    assert check("exists", actual) is (actual is not None)


@given(actual=numbers_or_numeric_text, expected=numbers_or_numeric_text)
def test_orderings_are_complements_for_numbers(actual: object, expected: Any) -> None:
    assert check("greaterThan", actual, expected) is not check("lessThanOrEquals", actual, expected)
    assert check("lessThan", actual, expected) is not check("greaterThanOrEquals", actual, expected)


@given(actual=numbers, expected=numbers)
def test_orderings_agree_with_python_on_numbers(actual: float, expected: float) -> None:
    assert check("greaterThan", actual, expected) is (actual > expected)
    assert check("lessThan", str(actual), expected) is (actual < expected)
    assert check("equals", actual, str(expected)) is (actual == expected)


@given(haystack=ascii_text, start=st.integers(0, 20), length=st.integers(0, 20))
def test_contains_ignores_case(haystack: str, start: int, length: int) -> None:
    needle = haystack[start : start + length]
    assert check("contains", haystack, needle)
    assert check("contains", haystack.upper(), needle.lower())
    assert check("contains", haystack.lower(), needle.upper())
    assert check("contains", [haystack.upper()], haystack.lower())


@given(haystack=ascii_text, needle=ascii_text)
def test_contains_is_a_case_insensitive_substring_test(haystack: str, needle: str) -> None:
    assert check("contains", haystack, needle) is (needle.lower() in haystack.lower())

"""The canonical form: any definition the model can hold survives JSON and YAML unchanged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sequences import MAX_DURATION
from sequences import OPERATORS
from sequences import Condition
from sequences import ConditionStep
from sequences import Definition
from sequences import DelayStep
from sequences import EmailStep
from sequences import EventExit
from sequences import EventTrigger
from sequences import WaitStep
from sequences import parse_definition
from sequences import parse_duration

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20
).filter(str.strip)
paths = st.one_of(
    st.sampled_from(["contact.email", "event.event"]),
    names.map(lambda name: f"contact.properties.{name}"),
    names.map(lambda name: f"event.properties.{name}"),
)
numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False))
dates = st.dates().map(lambda day: day.isoformat())
scalars = st.one_of(st.text(max_size=20), numbers, st.booleans(), dates)


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    operator = draw(st.sampled_from(OPERATORS))
    if operator in ("exists", "notExists"):
        value = None
    elif operator.startswith(("greater", "less")):
        value = draw(st.one_of(numbers, dates))
    else:
        value = draw(scalars)
    return Condition(draw(paths), operator, value)


# Every duration in a definition was parsed from `<amount><unit>`, so generate them that way.
durations = st.builds(
    lambda amount, unit: parse_duration(f"{amount}{unit}"),
    st.integers(1, 9_999_999),
    st.sampled_from("smhdw"),
).filter(lambda duration: duration <= MAX_DURATION)
branches = st.sampled_from(["continue", "exit"])
condition_lists = st.lists(conditions(), max_size=3).map(tuple)
steps = st.one_of(
    st.builds(EmailStep, names),
    st.builds(DelayStep, durations),
    st.builds(ConditionStep, conditions(), branches, branches),
    st.builds(WaitStep, names, durations, condition_lists, branches, branches),
)
definitions = st.builds(
    Definition,
    steps=st.lists(steps, min_size=1, max_size=6).map(tuple),
    triggers=st.lists(st.builds(EventTrigger, names, condition_lists), max_size=3).map(tuple),
    reenrol=st.sampled_from(["afterCompletion", "always", "never"]),
    exit_conditions=st.lists(
        st.one_of(st.builds(EventExit, names, condition_lists), conditions()), max_size=3
    ).map(tuple),
)


@given(definitions)
def test_json_round_trip(definition: Definition) -> None:
    assert parse_definition(definition.to_json()) == definition


@given(definitions)
def test_yaml_round_trip(definition: Definition) -> None:
    assert parse_definition(definition.to_yaml()) == definition


@given(definitions)
def test_the_canonical_form_is_a_fixed_point(definition: Definition) -> None:
    text = definition.to_json()
    assert parse_definition(text).to_json() == text

"""Invalid definitions: every problem is reported, each naming the step and the field."""

from __future__ import annotations

import json

import pytest

from sequences import DefinitionError
from sequences import parse_definition


def problems(text: str, triggers: object = None) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, triggers=triggers)
    return [str(problem) for problem in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps: [{action: sms}]", "steps[0].action: unknown action 'sms'"),
        (
            "steps: [{send: a}, {send: b}, {action: delay, duration: 3x}]",
            "steps[2].duration: not a duration '3x' (use e.g. 30m, 2h, 3d, 1w)",
        ),
        ("steps: [{action: delay, duration: 0d}]", "steps[0].duration: not a duration '0d'"),
        ("steps: [{action: delay, duration: 3}]", "steps[0].duration: not a duration 3"),
        ("steps: [{action: delay}]", "steps[0].duration: required"),
        (
            "steps: [{action: delay, duration: 1000w}]",
            "steps[0].duration: '1000w' is longer than the maximum of 520w",
        ),
        ("steps: [{delay: 2 days}]", "steps[0].delay: not a duration '2 days'"),
        ("steps: [{action: email}]", "steps[0].template: required"),
        (
            "steps: [{action: email, template: 5}]",
            "steps[0].template: expected a string, got number",
        ),
        ("steps: [{action: email, template: '  '}]", "steps[0].template: must not be empty"),
        (
            "steps: [{action: email, templateId: t}]",
            "steps[0].templateId: unknown key (did you mean 'template'?)",
        ),
        (
            "steps: [{action: email, template: t, subject: hi}]",
            "steps[0].subject: unknown key (expected one of action, template)",
        ),
        ("steps: [{type: sms}]", "steps[0].type: unknown action 'sms'"),
        ('{"steps": [{"type": "email"}]}', "steps[0].templateId: required"),
        (
            '{"steps": [{"type": "email", "templateId": "t", "delay": "soon"}]}',
            "steps[0].delay: not a duration 'soon'",
        ),
        ("steps: [{send: t, delay: 1d}]", "steps[0].delay: unknown key (expected one of send)"),
        ("steps: [{sms: t}]", "steps[0]: needs an action: email, delay, condition or wait"),
        ("steps: [welcome]", "steps[0]: expected a step mapping, got string"),
        ("steps: []", "steps: at least one step is required"),
        ("trigger: {event: a}", "steps: required"),
        ("steps: {send: t}", "steps: expected a list of steps"),
        ("stepz: []", "stepz: unknown key (expected one of trigger, triggers, reenrol, steps"),
        ("reenroll: never\nsteps: [{send: t}]", "reenroll: unknown key (did you mean 'reenrol'?)"),
        (
            "reenrol: sometimes\nsteps: [{send: t}]",
            "reenrol: expected afterCompletion or always or never, got 'sometimes'",
        ),
        (
            "steps: [{action: condition, property: contact.email, operator: like, value: x}]",
            "steps[0].operator: unknown operator 'like' (use equals, notEquals, contains",
        ),
        (
            "steps: [{action: condition, property: contact.email, value: x}]",
            "steps[0].operator: required",
        ),
        (
            "steps: [{action: condition, property: contact.email, operator: equals}]",
            "steps[0].value: required with operator 'equals'",
        ),
        (
            "steps: [{action: condition, property: contact.email, operator: exists, value: 1}]",
            "steps[0].value: not allowed with operator 'exists'",
        ),
        (
            "steps: [{action: condition, property: contact.email, operator: equals, value: [1]}]",
            "steps[0].value: expected a string, number or boolean",
        ),
        (
            "steps: [{action: condition, property: contact.email, operator: equals, value: .nan}]",
            "steps[0].value: expected a finite number, got nan",
        ),
        (
            "steps: [{action: condition, property: contact.properties.age, operator: greaterThan,"
            " value: old}]",
            "steps[0].value: 'greaterThan' needs a number or an ISO 8601 date, got 'old'",
        ),
        (
            "steps: [{action: condition, property: contact.plan, operator: exists}]",
            "steps[0].property: unknown path 'contact.plan' (use contact.email, "
            "contact.properties.<name>, event.event or event.properties.<name>)",
        ),
        (
            "steps: [{action: condition, property: contact.email, operator: exists, onTrue: stop}]",
            "steps[0].onTrue: expected continue or exit, got 'stop'",
        ),
        ("steps: [{action: wait, event: e}]", "steps[0].timeout: required"),
        ("steps: [{action: wait, timeout: 1h}]", "steps[0].event: required"),
        (
            "steps: [{wait: {event: e, timeout: 1h, onEvent: later}}]",
            "steps[0].wait.onEvent: expected continue or exit, got 'later'",
        ),
        (
            "steps: [{condition: {property: contact.email, operator: contains}}]",
            "steps[0].condition.value: required with operator 'contains'",
        ),
        (
            "trigger: {api: true, event: a}\nsteps: [{send: t}]",
            "trigger: give either api: true or an event (with conditions), not both",
        ),
        ("trigger: {api: false}\nsteps: [{send: t}]", "trigger.api: expected true, got False"),
        ("trigger: {}\nsteps: [{send: t}]", "trigger.event: required"),
        ("trigger: signed_up\nsteps: [{send: t}]", "trigger: expected a mapping with event or api"),
        (
            f"trigger: {{event: {'e' * 201}}}\nsteps: [{{send: t}}]",
            "trigger.event: longer than 200 characters",
        ),
        (
            "trigger: {event: a, conditions: [{property: event.properties.n, operator: gt,"
            " value: 1}]}\nsteps: [{send: t}]",
            "trigger.conditions[0].operator: unknown operator 'gt'",
        ),
        (
            "trigger: {event: a, conditions: {operator: or, conditions: []}}\nsteps: [{send: t}]",
            "trigger.conditions.operator: only 'and' is supported",
        ),
        (
            "trigger: {event: a}\ntriggers: [{event: b}]\nsteps: [{send: t}]",
            "triggers: give either trigger or triggers, not both",
        ),
        ("steps: [{send: t}]\nexitConditions: [{}]", "exitConditions[0]: needs event or property"),
        (
            "steps: [{send: t}]\nexitConditions: [{event: a, property: contact.email}]",
            "exitConditions[0]: give either event (with conditions) or property, not both",
        ),
        (
            "steps: [{send: t}]\nexitConditions: [{property: contact.properties.plan,"
            " operator: equals}]",
            "exitConditions[0].value: required with operator 'equals'",
        ),
        ("steps: [{send: t}]\nexitConditions: {event: a}", "exitConditions: expected a list"),
    ],
)
def test_problem_names_the_step_and_field(text: str, expected: str) -> None:
    found = problems(text)
    assert any(problem.startswith(expected) for problem in found), found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "definition: empty; expected YAML or JSON with steps"),
        ("steps: [", "definition: not valid YAML or JSON: line 1 column 9"),
        ('{"steps": [}', "definition: not valid YAML or JSON: line 1 column 12: Expecting value"),
        ("- send: t", "definition: expected a mapping with steps, got list"),
        ("# nothing", "definition: expected a mapping with steps, got null"),
    ],
)
def test_unreadable_text(text: str, expected: str) -> None:
    (problem,) = problems(text)
    assert problem.startswith(expected)


def test_every_problem_is_reported_at_once() -> None:
    text = """
    steps:
      - action: sms
      - action: delay
        duration: 3x
      - action: email
    exitConditions:
      - property: contact.properties.plan
        operator: equals
    """
    assert problems(text) == [
        "steps[0].action: unknown action 'sms' (use email, delay, condition or wait)",
        "steps[1].duration: not a duration '3x' (use e.g. 30m, 2h, 3d, 1w)",
        "steps[2].template: required",
        "exitConditions[0].value: required with operator 'equals'",
    ]


def test_request_triggers_are_validated_and_reported_as_their_own_field() -> None:
    triggers = [{"eventName": "x"}, {"type": "schedule"}, "signed_up"]
    with pytest.raises(DefinitionError) as caught:
        parse_definition("steps: [{action: sms}]", triggers=triggers)
    assert caught.value.details() == {
        "definition": [
            "steps[0].action: unknown action 'sms' (use email, delay, condition or wait)"
        ],
        "triggers[0].eventName": ["unknown key (did you mean 'event'?)"],
        "triggers[0].event": ["required"],
        "triggers[1].type": ["unknown trigger type 'schedule' (use event)"],
        "triggers[2]": ["expected a trigger mapping, got string"],
    }
    assert problems("steps: [{send: t}]", triggers={"event": "a"}) == [
        "triggers: expected a list of triggers"
    ]
    with pytest.raises(DefinitionError) as caught:
        parse_definition("[")
    assert caught.value.details() == {
        "definition": ["not valid YAML or JSON: line 1 column 2: Expecting value"]
    }


def test_the_error_message_lists_every_problem() -> None:
    with pytest.raises(DefinitionError, match=r"steps\[0\].template: required; steps\[1\]"):
        parse_definition(json.dumps({"steps": [{"action": "email"}, {"action": "x"}]}))

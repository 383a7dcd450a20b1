"""Parsing definitions: the contract's canonical form, the three dialects, triggers, round trips."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml

from sequences import Condition
from sequences import ConditionStep
from sequences import Definition
from sequences import DelayStep
from sequences import EmailStep
from sequences import EventExit
from sequences import EventTrigger
from sequences import WaitStep
from sequences import parse_definition

# CONTRACT.md §5, verbatim.
CANONICAL = """
trigger:
  event: purchase.completed        # or: api: true
  conditions:                      # optional, all must hold
    - property: event.properties.amount
      operator: greaterThan
      value: 50
reenrol: afterCompletion           # afterCompletion (default) | always | never
steps:
  - action: email
    template: order-confirmation
  - action: delay
    duration: 3d                   # integer + unit: s m h d w
  - action: condition
    property: contact.properties.hasReviewed
    operator: equals
    value: true
    onTrue: exit                   # exit | continue (default continue)
    onFalse: continue
  - action: email
    template: review-request
exitConditions:                    # leave as soon as one holds
  - event: purchase.refunded
  - property: contact.properties.plan
    operator: equals
    value: enterprise
"""

CANONICAL_MODEL = Definition(
    steps=(
        EmailStep("order-confirmation"),
        DelayStep(timedelta(days=3)),
        ConditionStep(Condition("contact.properties.hasReviewed", "equals", True), on_true="exit"),
        EmailStep("review-request"),
    ),
    triggers=(
        EventTrigger(
            "purchase.completed", (Condition("event.properties.amount", "greaterThan", 50),)
        ),
    ),
    reenrol="afterCompletion",
    exit_conditions=(
        EventExit("purchase.refunded"),
        Condition("contact.properties.plan", "equals", "enterprise"),
    ),
)

# The API reference's shorthand (kraiter-docs §7.2); triggers come with the request.
SHORTHAND = """
steps:
  - send: welcome-email
  - delay: 1d
  - send: getting-started
  - delay: 3d
  - send: tips-and-tricks
"""

# The SDK's JSON (kraiter-docs §7.3): an email's own `delay` becomes a delay step before it.
SDK_JSON = json.dumps(
    {
        "steps": [
            {"type": "email", "templateId": "tmpl_welcome", "delay": "0d"},
            {"type": "delay", "duration": "2d"},
            {"type": "email", "templateId": "tmpl_getting_started", "delay": "0d"},
            {"type": "email", "templateId": "tmpl_tips", "delay": "1w"},
        ]
    }
)


def test_the_contracts_canonical_example_parses_to_the_model() -> None:
    definition = parse_definition(CANONICAL)
    assert definition == CANONICAL_MODEL
    assert definition.template_ids() == ("order-confirmation", "review-request")
    assert definition.trigger_events == {"purchase.completed"}
    assert definition.exit_events == {"purchase.refunded"}
    assert not definition.api_only


def test_the_api_shorthand_takes_its_triggers_from_the_request() -> None:
    definition = parse_definition(SHORTHAND, triggers=[{"event": "signed_up"}])
    assert definition == Definition(
        steps=(
            EmailStep("welcome-email"),
            DelayStep(timedelta(days=1)),
            EmailStep("getting-started"),
            DelayStep(timedelta(days=3)),
            EmailStep("tips-and-tricks"),
        ),
        triggers=(EventTrigger("signed_up"),),
    )


def test_the_sdk_json_turns_email_delays_into_delay_steps() -> None:
    definition = parse_definition(SDK_JSON, triggers=[{"type": "event", "eventName": "signed_up"}])
    assert definition.steps == (
        EmailStep("tmpl_welcome"),
        DelayStep(timedelta(days=2)),
        EmailStep("tmpl_getting_started"),
        DelayStep(timedelta(weeks=1)),
        EmailStep("tmpl_tips"),
    )
    assert definition.triggers == (EventTrigger("signed_up"),)


def test_the_three_dialects_normalise_to_one_model() -> None:
    guide = """
    trigger: {event: signed_up}
    steps:
      - {action: email, template: welcome}
      - {action: delay, duration: 2d}
      - {action: email, template: tips}
    """
    shorthand = "steps: [{send: welcome}, {delay: 2d}, {send: tips}]"
    sdk = json.dumps(
        {
            "steps": [
                {"type": "email", "templateId": "welcome"},
                {"type": "email", "templateId": "tips", "delay": "2d"},
            ]
        }
    )
    expected = parse_definition(guide)
    assert parse_definition(shorthand, triggers=[{"event": "signed_up"}]) == expected
    assert parse_definition(sdk, triggers=[{"type": "event", "eventName": "signed_up"}]) == expected


def test_wait_steps_in_every_dialect() -> None:
    expected = WaitStep(
        "cart.checked_out",
        timedelta(hours=1),
        (Condition("event.properties.cartId", "exists"),),
        on_event="exit",
    )
    body = {
        "event": "cart.checked_out",
        "conditions": [{"property": "event.properties.cartId", "operator": "exists"}],
        "timeout": "1h",
        "onEvent": "exit",
    }
    guide = json.dumps({"steps": [{"action": "wait", **body}]})
    sdk = json.dumps({"steps": [{"type": "wait", **body}]})
    shorthand = yaml.safe_dump({"steps": [{"wait": body}]})
    for text in (guide, sdk, shorthand):
        assert parse_definition(text).steps == (expected,)


def test_condition_steps_default_to_continue_and_have_a_shorthand() -> None:
    text = "steps: [{condition: {property: contact.email, operator: contains, value: '@acme'}}]"
    (step,) = parse_definition(text).steps
    assert step == ConditionStep(Condition("contact.email", "contains", "@acme"))
    assert (step.on_true, step.on_false) == ("continue", "continue")


def test_request_triggers_replace_the_definitions_own() -> None:
    inside = "trigger: {event: a}\nsteps: [{send: t}]"
    assert parse_definition(inside, triggers=[{"event": "b"}]).triggers == (EventTrigger("b"),)
    assert parse_definition(inside, triggers=[]).triggers == (EventTrigger("a"),)
    assert parse_definition(inside, triggers=None).triggers == (EventTrigger("a"),)
    api = "trigger: {api: true}\nsteps: [{send: t}]"
    assert parse_definition(api, triggers=[{"event": "b"}]).triggers == (EventTrigger("b"),)


def test_no_trigger_or_api_true_means_api_enrolment_only() -> None:
    assert parse_definition("trigger: {api: true}\nsteps: [{send: t}]").api_only
    assert parse_definition("steps: [{send: t}]").api_only
    assert parse_definition("steps: [{send: t}]").trigger_events == frozenset()


def test_trigger_conditions_may_be_a_list_a_single_condition_or_an_and_group() -> None:
    condition = {"property": "contact.properties.plan", "operator": "equals", "value": "pro"}
    expected = (
        EventTrigger("signed_up", (Condition("contact.properties.plan", "equals", "pro"),)),
    )
    for conditions in ([condition], condition, {"operator": "and", "conditions": [condition]}):
        triggers = [{"event": "signed_up", "conditions": conditions}]
        assert parse_definition("steps: [{send: t}]", triggers=triggers).triggers == expected


def test_several_triggers_and_defaults() -> None:
    triggers = [{"event": "a"}, {"type": "event", "eventName": "b"}]
    definition = parse_definition("steps: [{send: t}]", triggers=triggers)
    assert definition.triggers == (EventTrigger("a"), EventTrigger("b"))
    assert definition.trigger_events == {"a", "b"}
    assert definition.reenrol == "afterCompletion"


def test_event_name_is_an_alias_of_event_event() -> None:
    text = "steps: [{condition: {property: event.name, operator: equals, value: x}}]"
    (step,) = parse_definition(text).steps
    assert isinstance(step, ConditionStep)
    assert step.condition.path == "event.event"


def test_yaml_dates_in_values_are_kept_as_iso_text() -> None:
    text = """
    steps:
      - action: condition
        property: contact.properties.trialEnds
        operator: lessThan
        value: 2025-01-01
    """
    (step,) = parse_definition(text).steps
    assert isinstance(step, ConditionStep)
    assert step.condition.value == "2025-01-01"


def test_template_ids_are_unique_in_step_order() -> None:
    text = "steps: [{send: b}, {send: a}, {delay: 1d}, {send: b}]"
    assert parse_definition(text).template_ids() == ("b", "a")


@pytest.mark.parametrize(
    ("text", "triggers"),
    [
        (CANONICAL, None),
        (
            SHORTHAND,
            [
                {
                    "event": "signed_up",
                    "conditions": [
                        {"property": "contact.email", "operator": "notContains", "value": "@test"}
                    ],
                }
            ],
        ),
        (SDK_JSON, [{"type": "event", "eventName": "a"}, {"event": "b"}]),
        ("trigger: {api: true}\nreenrol: never\nsteps: [{send: t}]", None),
        ('{"steps": [{"action": "wait", "event": "e", "timeout": "90m"}]}', None),
    ],
)
def test_the_canonical_form_parses_back_equal(text: str, triggers: object) -> None:
    definition = parse_definition(text, triggers=triggers)
    assert parse_definition(definition.to_json()) == definition
    assert parse_definition(definition.to_yaml()) == definition
    assert parse_definition(definition.to_yaml()).to_json() == definition.to_json()


def test_the_canonical_form_spells_every_default() -> None:
    definition = parse_definition(SHORTHAND)
    canonical = definition.to_canonical()
    assert canonical["trigger"] == {"api": True}
    assert canonical["reenrol"] == "afterCompletion"
    assert canonical["steps"][:2] == [
        {"action": "email", "template": "welcome-email"},
        {"action": "delay", "duration": "1d"},
    ]
    assert "exitConditions" not in canonical
    (condition_step,) = parse_definition(
        "steps: [{action: condition, property: contact.email, operator: exists}]"
    ).to_canonical()["steps"]
    assert condition_step == {
        "action": "condition",
        "property": "contact.email",
        "operator": "exists",
        "onTrue": "continue",
        "onFalse": "continue",
    }


def test_the_canonical_json_is_stable() -> None:
    first = parse_definition(CANONICAL).to_json()
    assert first == parse_definition(first).to_json()
    assert json.loads(first)["steps"][1] == {"action": "delay", "duration": "3d"}


def test_definitions_are_immutable() -> None:
    definition = parse_definition(CANONICAL)
    assert isinstance(definition.steps, tuple)
    with pytest.raises(AttributeError):
        definition.reenrol = "always"  # type: ignore[misc]

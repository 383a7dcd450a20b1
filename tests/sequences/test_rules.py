"""Triggers, exit conditions, waits and the re-enrolment policy."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sequences import Condition
from sequences import ExitReason
from sequences import WaitStep
from sequences import event_exits
from sequences import exit_reason
from sequences import may_enrol
from sequences import parse_definition
from sequences import trigger_matches
from sequences import wait_matches

SEED = parse_definition(
    """
    trigger:
      event: purchase.completed
      conditions:
        - {property: event.properties.amount, operator: greaterThan, value: 50}
        - {property: contact.properties.country, operator: notEquals, value: FR}
    steps: [{send: order-confirmation}]
    exitConditions:
      - event: purchase.refunded
      - event: support.ticket
        conditions: [{property: event.properties.priority, operator: equals, value: high}]
      - {property: contact.properties.plan, operator: equals, value: enterprise}
    """
)
CONTACT = {"email": "a@example.com", "properties": {"country": "GB"}, "subscribed": True}


def purchase(amount: object, name: str = "purchase.completed") -> dict[str, object]:
    return {"event": name, "properties": {"amount": amount}}


@pytest.mark.parametrize(
    ("event", "contact", "matches"),
    [
        (purchase(60), CONTACT, True),
        (purchase("60.5"), CONTACT, True),
        ({"name": "purchase.completed", "properties": {"amount": 99}}, CONTACT, True),  # stored
        (purchase(50), CONTACT, False),
        (purchase(None), CONTACT, False),
        ({"event": "purchase.completed"}, CONTACT, False),
        (purchase(60, "Purchase.completed"), CONTACT, False),  # names are case-sensitive
        (purchase(60, "purchase.completed "), CONTACT, False),  # and never trimmed
        (purchase(60, "purchase.refunded"), CONTACT, False),
        (purchase(60), {"email": "b@example.com", "properties": {"country": "FR"}}, False),
        (purchase(60), {"email": "b@example.com"}, True),  # notEquals holds for a missing value
    ],
)
def test_trigger_matches(
    event: dict[str, object], contact: dict[str, object], matches: bool
) -> None:
    assert trigger_matches(SEED, event, contact) is matches


def test_any_trigger_may_match_and_api_only_sequences_never_do() -> None:
    two = parse_definition("steps: [{send: t}]", triggers=[{"event": "a"}, {"event": "b"}])
    assert trigger_matches(two, {"event": "b"}, CONTACT)
    assert not trigger_matches(two, {"event": "c"}, CONTACT)
    api = parse_definition("trigger: {api: true}\nsteps: [{send: t}]")
    assert not trigger_matches(api, {"event": "a"}, CONTACT)


@pytest.mark.parametrize(
    ("event", "exits"),
    [
        ({"event": "purchase.refunded"}, True),
        ({"name": "purchase.refunded", "properties": {}}, True),
        ({"event": "support.ticket", "properties": {"priority": "high"}}, True),
        ({"event": "support.ticket", "properties": {"priority": "low"}}, False),
        ({"event": "purchase.completed", "properties": {"amount": 60}}, False),
    ],
)
def test_event_exits(event: dict[str, object], exits: bool) -> None:
    assert event_exits(SEED, event, CONTACT) is exits


def test_property_exit_conditions_do_not_react_to_events() -> None:
    enterprise = {"email": "a@example.com", "properties": {"plan": "enterprise"}}
    assert not event_exits(SEED, {"event": "contact.updated"}, enterprise)
    assert exit_reason(SEED, enterprise, None) is ExitReason.EXIT_CONDITION


@pytest.mark.parametrize(
    ("contact", "reason"),
    [
        (CONTACT, None),
        ({**CONTACT, "subscribed": False}, ExitReason.UNSUBSCRIBED),
        ({**CONTACT, "unsubscribed": True}, ExitReason.UNSUBSCRIBED),
        ({**CONTACT, "suppressed": True}, ExitReason.SUPPRESSED),
        ({**CONTACT, "properties": {"plan": "enterprise"}}, ExitReason.EXIT_CONDITION),
        ({**CONTACT, "properties": {"plan": "Enterprise"}}, None),
    ],
)
def test_exit_reason(contact: dict[str, object], reason: ExitReason | None) -> None:
    assert exit_reason(SEED, contact, purchase(60)) == reason


def test_property_exits_may_read_the_enrolling_event() -> None:
    definition = parse_definition(
        "steps: [{send: t}]\n"
        "exitConditions: [{property: event.properties.test, operator: equals, value: true}]"
    )
    assert exit_reason(definition, CONTACT, {"event": "a", "properties": {"test": True}})
    assert exit_reason(definition, CONTACT, {"event": "a", "properties": {}}) is None
    assert exit_reason(definition, CONTACT, None) is None  # API enrolments have no event


def test_wait_matches_the_event_name_and_conditions() -> None:
    step = WaitStep(
        "purchase.completed",
        timedelta(hours=1),
        (Condition("event.properties.cartId", "equals", "c1"),),
    )
    assert wait_matches(step, {"event": "purchase.completed", "properties": {"cartId": "c1"}}, {})
    assert not wait_matches(
        step, {"event": "purchase.completed", "properties": {"cartId": "c2"}}, {}
    )
    assert not wait_matches(step, {"event": "cart.updated", "properties": {"cartId": "c1"}}, {})


@pytest.mark.parametrize(
    ("policy", "active", "enrolled_before", "allowed"),
    [
        ("afterCompletion", False, False, True),
        ("afterCompletion", False, True, True),
        ("afterCompletion", True, True, False),
        ("always", True, True, True),
        ("always", False, False, True),
        ("never", False, False, True),
        ("never", False, True, False),
        ("never", True, True, False),
    ],
)
def test_may_enrol(policy: str, active: bool, enrolled_before: bool, allowed: bool) -> None:
    definition = parse_definition(f"reenrol: {policy}\nsteps: [{{send: t}}]")
    assert may_enrol(definition, active=active, enrolled_before=enrolled_before) is allowed

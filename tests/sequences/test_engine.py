"""The engine's decisions: the seed example walked through with explicit times, then waits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest

from sequences import Arrival
from sequences import Complete
from sequences import Condition
from sequences import EnrolmentState
from sequences import Exit
from sequences import ExitReason
from sequences import Position
from sequences import Schedule
from sequences import SendEmail
from sequences import Wait
from sequences import decide
from sequences import parse_definition
from sequences import start

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SECOND, HOUR, DAY = timedelta(seconds=1), timedelta(hours=1), timedelta(days=1)
SEED = parse_definition(
    """
    trigger: {event: purchase.completed}
    steps:
      - {action: email, template: order-confirmation}
      - {action: delay, duration: 3d}
      - action: condition
        property: contact.properties.hasReviewed
        operator: equals
        value: true
        onTrue: exit
      - {action: email, template: review-request}
    exitConditions:
      - {property: contact.properties.plan, operator: equals, value: enterprise}
    """
)
PURCHASE = {"event": "purchase.completed", "properties": {"amount": 60}}
CONTACT = {"email": "a@example.com", "properties": {}, "subscribed": True, "suppressed": False}


def at(
    position: Position,
    contact: Mapping[str, Any] = CONTACT,
    arrival: Arrival | None = None,
) -> EnrolmentState:
    return EnrolmentState(position.step_index, position.at, contact, PURCHASE, arrival)


def test_the_seed_example_step_by_step() -> None:
    first = decide(SEED, at(start(SEED, T0)), T0 + SECOND)
    assert first == SendEmail(0, "order-confirmation", T0, then=Position(1, T0))
    assert isinstance(first, SendEmail)
    delay = decide(SEED, at(first.then), T0 + 2 * SECOND)
    assert delay == Schedule(2, T0 + 3 * DAY)  # due from when step 1 fell due, not from now
    assert isinstance(delay, Schedule)
    for early in (T0 + 2 * SECOND, T0 + DAY, T0 + 3 * DAY - SECOND):  # duplicate or early tasks
        assert decide(SEED, at(delay.position), early) == delay
    second = decide(SEED, at(delay.position), T0 + 3 * DAY + 5 * SECOND)
    assert second == SendEmail(3, "review-request", T0 + 3 * DAY, then=Position(4, T0 + 3 * DAY))
    assert isinstance(second, SendEmail)
    assert decide(SEED, at(second.then), T0 + 3 * DAY + 6 * SECOND) == Complete()
    assert decide(SEED, at(second.then), T0 + 9 * DAY) == Complete()


def test_the_condition_step_exits_a_contact_who_has_reviewed() -> None:
    reviewed = {**CONTACT, "properties": {"hasReviewed": True}}
    assert decide(SEED, at(Position(2, T0 + 3 * DAY), reviewed), T0 + 3 * DAY) == Exit(
        ExitReason.CONDITION, 2
    )
    not_yet = {**CONTACT, "properties": {"hasReviewed": "false"}}
    decision = decide(SEED, at(Position(2, T0 + 3 * DAY), not_yet), T0 + 3 * DAY)
    assert isinstance(decision, SendEmail)
    assert decision.template == "review-request"


def test_property_exit_conditions_are_checked_before_every_step() -> None:
    enterprise = {**CONTACT, "properties": {"plan": "enterprise"}}
    assert decide(SEED, at(start(SEED, T0), enterprise), T0) == Exit(ExitReason.EXIT_CONDITION, 0)
    assert decide(SEED, at(Position(2, T0), enterprise), T0) == Exit(ExitReason.EXIT_CONDITION, 2)
    # A step that is not due yet is left alone: the check happens when it runs.
    assert decide(SEED, at(Position(2, T0 + DAY), enterprise), T0) == Schedule(2, T0 + DAY)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"subscribed": False}, ExitReason.UNSUBSCRIBED),
        ({"suppressed": True}, ExitReason.SUPPRESSED),
    ],
)
def test_unsubscribed_or_suppressed_contacts_exit(
    change: dict[str, bool], reason: ExitReason
) -> None:
    contact = {**CONTACT, **change}
    assert decide(SEED, at(Position(3, T0), contact), T0) == Exit(reason, 3)


def test_late_runs_do_not_drift() -> None:
    drip = parse_definition("steps: [{send: a}, {delay: 1d}, {send: b}, {delay: 1d}, {send: c}]")
    late = T0 + DAY + 2 * HOUR  # the worker was down for two hours
    decision = decide(drip, at(Position(1, T0)), late)
    assert decision == SendEmail(2, "b", T0 + DAY, then=Position(3, T0 + DAY))
    assert isinstance(decision, SendEmail)
    assert decide(drip, at(decision.then), late) == Schedule(4, T0 + 2 * DAY)


def test_elapsed_delays_are_walked_through_in_one_decision() -> None:
    drip = parse_definition("steps: [{delay: 1h}, {delay: 1d}, {send: a}, {delay: 1w}]")
    decision = decide(drip, at(start(drip, T0)), T0 + 5 * DAY)
    assert decision == SendEmail(2, "a", T0 + DAY + HOUR, then=Position(3, T0 + DAY + HOUR))
    assert decide(drip, at(Position(3, T0 + DAY)), T0 + 5 * DAY) == Schedule(4, T0 + 8 * DAY)
    assert decide(drip, at(Position(4, T0 + 8 * DAY)), T0 + 8 * DAY) == Complete()


def test_a_step_index_past_the_end_is_complete_and_a_negative_one_is_refused() -> None:
    assert decide(SEED, at(Position(99, T0)), T0) == Complete()
    with pytest.raises(ValueError, match="must not be negative"):
        at(Position(-1, T0))


def test_due_times_saturate_instead_of_overflowing() -> None:
    far = datetime.max.replace(tzinfo=UTC) - DAY
    drip = parse_definition("steps: [{delay: 520w}, {send: a}]")
    assert decide(drip, at(start(drip, far)), far) == Schedule(1, datetime.max.replace(tzinfo=UTC))


CART = parse_definition(
    """
    trigger: {event: cart.updated}
    steps:
      - action: wait
        event: purchase.completed
        conditions: [{property: event.properties.cartId, operator: equals, value: c1}]
        timeout: 1h
        onEvent: exit
      - {action: email, template: cart-reminder}
    """
)
BOUGHT = {"event": "purchase.completed", "properties": {"cartId": "c1"}}


def test_a_wait_stores_its_deadline() -> None:
    position = start(CART, T0)
    assert position == Position(0, T0 + HOUR)
    (condition,) = CART.steps[0].conditions  # type: ignore[union-attr]
    assert condition == Condition("event.properties.cartId", "equals", "c1")
    waiting = Wait(0, "purchase.completed", (condition,), since=T0, timeout_at=T0 + HOUR)
    assert decide(CART, at(position), T0) == waiting
    assert waiting.position == position
    assert decide(CART, at(position), T0 + 59 * 60 * SECOND) == waiting


def test_the_awaited_event_resolves_the_wait() -> None:
    position = start(CART, T0)
    bought = Arrival(BOUGHT, T0 + 10 * 60 * SECOND)
    assert decide(CART, at(position, arrival=bought), bought.at) == Exit(ExitReason.WAIT_EVENT, 0)
    other_cart = Arrival({"event": "purchase.completed", "properties": {"cartId": "c2"}}, bought.at)
    assert isinstance(decide(CART, at(position, arrival=other_cart), bought.at), Wait)
    too_late = Arrival(BOUGHT, T0 + HOUR)
    assert isinstance(decide(CART, at(position, arrival=too_late), T0 + HOUR), SendEmail)


def test_the_timeout_continues_from_the_deadline() -> None:
    decision = decide(CART, at(start(CART, T0)), T0 + HOUR + 5 * SECOND)
    assert decision == SendEmail(1, "cart-reminder", T0 + HOUR, then=Position(2, T0 + HOUR))


def test_wait_branches_and_the_walk_into_a_wait() -> None:
    definition = parse_definition(
        """
        steps:
          - {send: welcome}
          - {delay: 1d}
          - {wait: {event: app.opened, timeout: 2d, onTimeout: exit}}
          - {send: tips}
        """
    )
    sent = decide(definition, at(start(definition, T0)), T0)
    assert isinstance(sent, SendEmail)
    waiting = decide(definition, at(sent.then), T0)  # the wait begins when the delay ends
    assert waiting == Wait(2, "app.opened", (), since=T0 + DAY, timeout_at=T0 + 3 * DAY)
    assert isinstance(waiting, Wait)
    early = Arrival({"event": "app.opened"}, T0 + HOUR)  # before the wait began: ignored
    assert decide(definition, at(waiting.position, arrival=early), T0 + HOUR) == waiting
    opened = Arrival({"event": "app.opened"}, T0 + 2 * DAY)
    assert decide(definition, at(waiting.position, arrival=opened), T0 + 2 * DAY) == SendEmail(
        3, "tips", T0 + 2 * DAY, then=Position(4, T0 + 2 * DAY)
    )
    expired = decide(definition, at(waiting.position), T0 + 3 * DAY)
    assert expired == Exit(ExitReason.WAIT_TIMEOUT, 2)
    # Workers down through the whole wait: the timeout still applies, in the same decision.
    assert decide(definition, at(Position(1, T0)), T0 + 9 * DAY) == expired


def test_an_email_followed_by_a_wait_hands_out_the_waits_deadline() -> None:
    definition = parse_definition("steps: [{send: a}, {wait: {event: e, timeout: 1h}}]")
    decision = decide(definition, at(start(definition, T0)), T0)
    assert decision == SendEmail(0, "a", T0, then=Position(1, T0 + HOUR))


def test_exit_conditions_end_a_wait() -> None:
    definition = parse_definition(
        "steps: [{wait: {event: e, timeout: 1d}}, {send: a}]\n"
        "exitConditions: [{property: contact.properties.plan, operator: exists}]"
    )
    contact = {**CONTACT, "properties": {"plan": "pro"}}
    decision = decide(definition, at(start(definition, T0), contact), T0 + HOUR)
    assert decision == Exit(ExitReason.EXIT_CONDITION, 0)

"""Sequences end to end on a real worker: triggers, e-mails, delays, exits and waits."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app import db
from app.models import Enrolment
from app.models import Send
from tests.api.test_sequences import active_sequence
from tests.conftest import Tenant
from tests.support import wait_for

pytestmark = pytest.mark.usefixtures("worker")

SEED = """
trigger:
  event: purchase.completed
  conditions:
    - property: event.properties.amount
      operator: greaterThan
      value: 50
steps:
  - action: email
    template: order-confirmation
  - action: delay
    duration: 2s
  - action: condition
    property: contact.properties.hasReviewed
    operator: equals
    value: true
    onTrue: exit
  - action: email
    template: review-request
exitConditions:
  - event: purchase.refunded
"""

CART = """
trigger:
  event: cart.updated
steps:
  - action: wait
    event: purchase.completed
    timeout: 2s
    onEvent: exit
    onTimeout: continue
  - send: cart-reminder
"""


def sends() -> list[tuple[str, str, int | None]]:
    with db.transaction() as session:
        rows = session.query(Send).order_by(Send.created_at).all()
        return [(row.template_id, row.status, row.step_index) for row in rows]


def enrolments() -> list[Enrolment]:
    with db.transaction() as session:
        return session.query(Enrolment).order_by(Enrolment.id).all()


def track(tenant: Tenant, email: str, event: str, **properties: Any) -> None:
    response = tenant.post("/api/events", json={"email": email, "event": event,
                                                "properties": properties})
    assert response.status_code == 202, response.get_json()


def test_the_seed_example_sends_each_email_once_after_its_delay(tenant: Tenant) -> None:
    active_sequence(tenant, "post-purchase", SEED, ("order-confirmation", "review-request"))
    started = time.monotonic()
    track(tenant, "ann@example.com", "purchase.completed", amount=80)
    track(tenant, "cheap@example.com", "purchase.completed", amount=10)  # condition fails
    wait_for(lambda: ("order-confirmation", "sent", 0) in sends(), message="the confirmation")
    assert time.monotonic() - started < 2.0  # at once, not after the delay
    assert ("review-request", "sent", 3) not in sends()
    wait_for(lambda: ("review-request", "sent", 3) in sends(), timeout=15,
             message="the review request")
    assert time.monotonic() - started >= 2.0
    [enrolment] = enrolments()
    wait_for(lambda: enrolments()[0].status == "completed", message="completion")
    time.sleep(1.0)  # nothing more may arrive
    assert sends() == [("order-confirmation", "sent", 0), ("review-request", "sent", 3)]
    listed = tenant.get("/api/sequences/post-purchase/enrolments").get_json()["data"]
    assert [(e["status"], e["currentStep"], e["nextStepAt"]) for e in listed] == [
        ("completed", 4, None)]
    events = tenant.get("/api/events?email=ann@example.com&event=email.sent").get_json()["data"]
    assert {e["properties"]["sequenceId"] for e in events} == {"post-purchase"}
    assert {e["properties"]["enrolmentId"] for e in events} == {enrolment.id}


def test_an_exit_event_ends_the_enrolment_and_cancels_the_pending_step(tenant: Tenant) -> None:
    active_sequence(tenant, "post-purchase", SEED, ("order-confirmation", "review-request"))
    track(tenant, "bob@example.com", "purchase.completed", amount=99)
    wait_for(lambda: ("order-confirmation", "sent", 0) in sends(), message="the confirmation")
    track(tenant, "bob@example.com", "purchase.refunded")
    wait_for(lambda: enrolments()[0].status == "exited", message="the exit")
    assert enrolments()[0].exit_reason == "exitCondition"
    time.sleep(3.0)  # past the delay: the cancelled step must not run
    assert sends() == [("order-confirmation", "sent", 0)]


def test_a_property_condition_step_exits(tenant: Tenant) -> None:
    active_sequence(tenant, "post-purchase", SEED, ("order-confirmation", "review-request"))
    tenant.post("/api/contacts", json={"email": "rev@example.com",
                                       "properties": {"hasReviewed": True}})
    track(tenant, "rev@example.com", "purchase.completed", amount=60)
    wait_for(lambda: enrolments() and enrolments()[0].status == "exited", timeout=15,
             message="the condition exit")
    assert enrolments()[0].exit_reason == "condition"
    assert sends() == [("order-confirmation", "sent", 0)]


def test_a_wait_step_ends_on_the_event_or_continues_at_the_timeout(tenant: Tenant) -> None:
    active_sequence(tenant, "cart", CART, ("cart-reminder",))
    track(tenant, "buyer@example.com", "cart.updated")
    track(tenant, "idler@example.com", "cart.updated")
    wait_for(lambda: len(enrolments()) == 2, message="two enrolments")
    track(tenant, "buyer@example.com", "purchase.completed", amount=1)
    wait_for(lambda: [e.status for e in enrolments()].count("completed") == 1, timeout=15,
             message="the idler's timeout")
    by_status = {e.status: e for e in enrolments()}
    assert by_status["exited"].exit_reason == "waitEvent"
    wait_for(lambda: [s[:2] for s in sends()] == [("cart-reminder", "sent")],
             message="one reminder")


def test_system_events_trigger_sequences(tenant: Tenant) -> None:
    active_sequence(tenant, "post-purchase", SEED, ("order-confirmation", "review-request"))
    follow_up = """
trigger:
  event: email.sent
  conditions:
    - property: event.properties.templateId
      operator: equals
      value: order-confirmation
steps:
  - send: thanks
"""
    active_sequence(tenant, "after-confirmation", follow_up, ("thanks",))
    track(tenant, "sys@example.com", "purchase.completed", amount=70)
    wait_for(lambda: ("thanks", "sent", 0) in sends(), message="the follow-up")
    assert sorted(e.sequence_id for e in enrolments()) == ["after-confirmation", "post-purchase"]


def test_pausing_holds_enrolments_and_resuming_continues(tenant: Tenant) -> None:
    active_sequence(tenant, "post-purchase", SEED, ("order-confirmation", "review-request"))
    track(tenant, "pat@example.com", "purchase.completed", amount=70)
    wait_for(lambda: ("order-confirmation", "sent", 0) in sends(), message="the confirmation")
    assert tenant.post("/api/sequences/post-purchase/pause").status_code == 200
    time.sleep(3.0)  # the delay passes while paused
    assert [s[0] for s in sends()] == ["order-confirmation"]
    assert enrolments()[0].status == "active"
    assert tenant.post("/api/sequences/post-purchase/resume").status_code == 200
    # Resumed steps wait for the sweeper (no beat here): run one sweep by hand.
    from tasks.sequences import sweep

    sweep.delay()
    wait_for(lambda: ("review-request", "sent", 3) in sends(), timeout=15,
             message="the held step")

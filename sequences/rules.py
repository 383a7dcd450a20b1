"""Which events enrol a contact, end an enrolment or resolve a wait; who may enrol again.

Events and contacts are plain mappings: an event `{"event" (or "name"): str, "properties": {...}}`
and a contact `{"email": str, "properties": {...}, "subscribed": bool, "suppressed": bool}`.
Conditions see the event being matched: the trigger event, the exit event, the awaited event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sequences.conditions import all_hold
from sequences.conditions import evaluate
from sequences.model import Condition
from sequences.model import Definition
from sequences.model import EventExit
from sequences.model import ExitReason
from sequences.model import WaitStep

Record = Mapping[str, Any]


def context(contact: Record, event: Record | None) -> dict[str, Any]:
    """Build the mapping conditions are evaluated against."""
    return {"contact": contact, "event": event}


def event_name(event: Record) -> object:
    """Return an event mapping's name (`event`, or `name` as stored events call it)."""
    return event.get("event", event.get("name"))


def trigger_matches(definition: Definition, event: Record, contact: Record) -> bool:
    """Tell whether an event enrols the contact: same name (case-sensitive) and conditions hold."""
    name = event_name(event)
    scope = context(contact, event)
    return any(
        trigger.event == name and all_hold(trigger.conditions, scope)
        for trigger in definition.triggers
    )


def event_exits(definition: Definition, event: Record, contact: Record) -> bool:
    """Tell whether a newly stored event ends an enrolment (never pass the enrolling event)."""
    name = event_name(event)
    scope = context(contact, event)
    return any(
        isinstance(exit_, EventExit) and exit_.event == name and all_hold(exit_.conditions, scope)
        for exit_ in definition.exit_conditions
    )


def wait_matches(step: WaitStep, event: Record, contact: Record) -> bool:
    """Tell whether an event is the one a wait step is waiting for."""
    return event_name(event) == step.event and all_hold(step.conditions, context(contact, event))


def exit_reason(definition: Definition, contact: Record, event: Record | None) -> ExitReason | None:
    """Say why an enrolment must leave before its next step, if it must.

    An unsubscribed or suppressed contact receives no sequence e-mail, so it leaves first; then
    the property exit conditions, evaluated with the enrolling event (None for API enrolments).
    """
    if contact.get("subscribed") is False or contact.get("unsubscribed") is True:
        return ExitReason.UNSUBSCRIBED
    if contact.get("suppressed") is True:
        return ExitReason.SUPPRESSED
    scope = context(contact, event)
    for exit_ in definition.exit_conditions:
        if isinstance(exit_, Condition) and evaluate(exit_, scope):
            return ExitReason.EXIT_CONDITION
    return None


def may_enrol(definition: Definition, *, active: bool, enrolled_before: bool) -> bool:
    """Apply the `reenrol` policy given the contact's enrolments in this sequence.

    `afterCompletion` allows a new enrolment once none is active (whether the last one completed
    or exited); `never` allows only the first; `always` allows one beside any active ones.
    """
    if definition.reenrol == "always":
        return True
    if definition.reenrol == "never":
        return not enrolled_before
    return not active

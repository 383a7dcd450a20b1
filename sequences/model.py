"""The typed, immutable model that every definition dialect is normalised to.

`Definition.to_canonical()` is the stored form: the guide's YAML shape with every default spelled
out, so parsing it again gives an equal `Definition`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any
from typing import ClassVar
from typing import Literal

import yaml

from sequences.durations import format_duration

Operator = Literal[
    "equals",
    "notEquals",
    "contains",
    "notContains",
    "greaterThan",
    "lessThan",
    "greaterThanOrEquals",
    "lessThanOrEquals",
    "exists",
    "notExists",
]
OPERATORS: tuple[Operator, ...] = (
    "equals",
    "notEquals",
    "contains",
    "notContains",
    "greaterThan",
    "lessThan",
    "greaterThanOrEquals",
    "lessThanOrEquals",
    "exists",
    "notExists",
)
VALUELESS_OPERATORS: frozenset[Operator] = frozenset({"exists", "notExists"})
ORDERING_OPERATORS: frozenset[Operator] = frozenset(
    {"greaterThan", "lessThan", "greaterThanOrEquals", "lessThanOrEquals"}
)

Branch = Literal["exit", "continue"]
BRANCHES: tuple[Branch, ...] = ("continue", "exit")  # the first is the default
Reenrol = Literal["afterCompletion", "always", "never"]
REENROL_POLICIES: tuple[Reenrol, ...] = ("afterCompletion", "always", "never")  # ditto
Scalar = str | int | float | bool


class ExitReason(StrEnum):
    """Why an enrolment left its sequence early (stored as the enrolment's `exitReason`)."""

    EXIT_CONDITION = "exitCondition"
    CONDITION = "condition"
    WAIT_EVENT = "waitEvent"
    WAIT_TIMEOUT = "waitTimeout"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"


@dataclass(frozen=True, slots=True)
class Condition:
    """A test of one path of the contact or event (`contact.properties.plan`) against a value."""

    path: str
    operator: Operator
    value: Scalar | None = None

    def to_canonical(self) -> dict[str, Any]:
        """Return the `{property, operator, value?}` mapping."""
        out: dict[str, Any] = {"property": self.path, "operator": self.operator}
        if self.operator not in VALUELESS_OPERATORS:
            out["value"] = self.value
        return out


def _with_conditions(out: dict[str, Any], conditions: tuple[Condition, ...]) -> dict[str, Any]:
    if conditions:
        out["conditions"] = [condition.to_canonical() for condition in conditions]
    return out


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """Enrol a contact when an event of this name is stored and every condition holds."""

    event: str
    conditions: tuple[Condition, ...] = ()

    def to_canonical(self) -> dict[str, Any]:
        """Return the `{event, conditions?}` mapping."""
        return _with_conditions({"event": self.event}, self.conditions)


@dataclass(frozen=True, slots=True)
class EventExit:
    """Leave the sequence as soon as an event of this name (matching the conditions) is stored."""

    event: str
    conditions: tuple[Condition, ...] = ()

    def to_canonical(self) -> dict[str, Any]:
        """Return the `{event, conditions?}` mapping."""
        return _with_conditions({"event": self.event}, self.conditions)


ExitCondition = EventExit | Condition


@dataclass(frozen=True, slots=True)
class EmailStep:
    """Send a template to the contact."""

    action: ClassVar[str] = "email"
    template: str

    def to_canonical(self) -> dict[str, Any]:
        """Return the guide-dialect step."""
        return {"action": self.action, "template": self.template}


@dataclass(frozen=True, slots=True)
class DelayStep:
    """Hold the enrolment for a fixed duration, counted from when this step fell due."""

    action: ClassVar[str] = "delay"
    duration: timedelta

    def to_canonical(self) -> dict[str, Any]:
        """Return the guide-dialect step."""
        return {"action": self.action, "duration": format_duration(self.duration)}


@dataclass(frozen=True, slots=True)
class ConditionStep:
    """Test the contact (or enrolling event); each outcome either exits or continues."""

    action: ClassVar[str] = "condition"
    condition: Condition
    on_true: Branch = "continue"
    on_false: Branch = "continue"

    def to_canonical(self) -> dict[str, Any]:
        """Return the guide-dialect step."""
        out: dict[str, Any] = {"action": self.action, **self.condition.to_canonical()}
        out.update(onTrue=self.on_true, onFalse=self.on_false)
        return out


@dataclass(frozen=True, slots=True)
class WaitStep:
    """Wait until a matching event is stored or the timeout passes, then exit or continue."""

    action: ClassVar[str] = "wait"
    event: str
    timeout: timedelta
    conditions: tuple[Condition, ...] = ()
    on_event: Branch = "continue"
    on_timeout: Branch = "continue"

    def to_canonical(self) -> dict[str, Any]:
        """Return the guide-dialect step."""
        out = _with_conditions({"action": self.action, "event": self.event}, self.conditions)
        out.update(
            timeout=format_duration(self.timeout), onEvent=self.on_event, onTimeout=self.on_timeout
        )
        return out


Step = EmailStep | DelayStep | ConditionStep | WaitStep


@dataclass(frozen=True, slots=True)
class Definition:
    """A parsed, validated sequence: triggers (none means API enrolment only) and ordered steps."""

    steps: tuple[Step, ...]
    triggers: tuple[EventTrigger, ...] = ()
    reenrol: Reenrol = "afterCompletion"
    exit_conditions: tuple[ExitCondition, ...] = ()

    @property
    def api_only(self) -> bool:
        """True when contacts join only through the enrolment endpoint (`trigger: {api: true}`)."""
        return not self.triggers

    @property
    def trigger_events(self) -> frozenset[str]:
        """Event names that can enrol a contact, for indexing active sequences by event name."""
        return frozenset(trigger.event for trigger in self.triggers)

    @property
    def exit_events(self) -> frozenset[str]:
        """Event names that can end an enrolment (`exitConditions: [{event: ...}]`)."""
        return frozenset(c.event for c in self.exit_conditions if isinstance(c, EventExit))

    def template_ids(self) -> tuple[str, ...]:
        """Templates the email steps send, each once, in step order (for the activation check)."""
        ids = (step.template for step in self.steps if isinstance(step, EmailStep))
        return tuple(dict.fromkeys(ids))

    def to_canonical(self) -> dict[str, Any]:
        """Return the guide-dialect mapping with every default explicit; it parses back equal."""
        out: dict[str, Any] = {}
        if not self.triggers:
            out["trigger"] = {"api": True}
        elif len(self.triggers) == 1:
            out["trigger"] = self.triggers[0].to_canonical()
        else:
            out["triggers"] = [trigger.to_canonical() for trigger in self.triggers]
        out["reenrol"] = self.reenrol
        out["steps"] = [step.to_canonical() for step in self.steps]
        if self.exit_conditions:
            out["exitConditions"] = [exit_.to_canonical() for exit_ in self.exit_conditions]
        return out

    def to_json(self) -> str:
        """Return the canonical mapping as compact JSON (key order is part of the format)."""
        return json.dumps(self.to_canonical(), ensure_ascii=False, separators=(",", ":"))

    def to_yaml(self) -> str:
        """Return the canonical mapping as block-style YAML, as the guides write it."""
        return yaml.safe_dump(
            self.to_canonical(), sort_keys=False, allow_unicode=True, default_flow_style=False
        )

"""The engine: from an enrolment's persisted position, decide the one next thing to do.

The app keeps one row per enrolment: `step_index`, `next_step_at` (a `Position`) and a status.
It only ever stores positions this module hands out (`start`, `SendEmail.then`,
`Schedule.position`, `Wait.position`), and calls `decide` whenever the row is due, a waited-for
event arrives, or a task runs twice; the same inputs always give the same decision.

A position means: the step at `step_index` falls due at `at`; for a wait step, `at` is the
wait's deadline instead (the wait began `timeout` before it), so one timestamp column serves the
sweeper in both cases. Due times follow from the previous due time, never from `now`, so late
workers cause no drift. `decide` runs pure steps (conditions, delays already elapsed) itself and
stops at the first e-mail, the first delay still running, a wait, an exit or the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any

from sequences.conditions import evaluate
from sequences.model import Condition
from sequences.model import ConditionStep
from sequences.model import Definition
from sequences.model import DelayStep
from sequences.model import EmailStep
from sequences.model import ExitReason
from sequences.model import WaitStep
from sequences.rules import context
from sequences.rules import exit_reason
from sequences.rules import wait_matches


@dataclass(frozen=True, slots=True)
class Position:
    """Where an enrolment stands: the row's `step_index` and `next_step_at`."""

    step_index: int
    at: datetime


@dataclass(frozen=True, slots=True)
class Arrival:
    """An event stored while the enrolment waits (`at`: when it was stored)."""

    event: Mapping[str, Any]
    at: datetime


@dataclass(frozen=True, slots=True)
class EnrolmentState:
    """Everything `decide` reads: the persisted position and fresh snapshots."""

    step_index: int
    next_step_at: datetime
    contact: Mapping[str, Any]
    event: Mapping[str, Any] | None = None  # the enrolling event; None for API enrolments
    arrival: Arrival | None = None  # a candidate event for a wait step; checked by `decide`

    def __post_init__(self) -> None:
        if self.step_index < 0:
            raise ValueError(f"step_index must not be negative, got {self.step_index}")


@dataclass(frozen=True, slots=True)
class SendEmail:
    """Send step `step_index`'s template (once per enrolment and step), then store `then`."""

    step_index: int
    template: str
    due_at: datetime
    then: Position


@dataclass(frozen=True, slots=True)
class Schedule:
    """Nothing to do before `due_at` (always after `now`): store `position` and sleep."""

    step_index: int
    due_at: datetime

    @property
    def position(self) -> Position:
        """The position to store."""
        return Position(self.step_index, self.due_at)


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait for `event` (stored from `since` on, matching `conditions`) until `timeout_at`."""

    step_index: int
    event: str
    conditions: tuple[Condition, ...]
    since: datetime
    timeout_at: datetime

    @property
    def position(self) -> Position:
        """The position to store: the sweeper wakes the enrolment at the deadline."""
        return Position(self.step_index, self.timeout_at)


@dataclass(frozen=True, slots=True)
class Exit:
    """Leave the sequence: mark the enrolment exited with `reason`."""

    reason: ExitReason
    step_index: int


@dataclass(frozen=True, slots=True)
class Complete:
    """Every step has run: mark the enrolment completed."""


Decision = SendEmail | Schedule | Wait | Exit | Complete


def start(definition: Definition, enrolled_at: datetime) -> Position:
    """Return the position of a new enrolment (step 0, due when it enrolled)."""
    return _enter(definition, 0, enrolled_at)


def decide(definition: Definition, state: EnrolmentState, now: datetime) -> Decision:
    """Decide the next action for an enrolment at `now` (aware datetimes throughout)."""
    steps = definition.steps
    index, at = state.step_index, state.next_step_at
    step = steps[index] if index < len(steps) else None
    if not isinstance(step, WaitStep):
        if at > now:  # also after a final delay: the enrolment completes when it ends
            return Schedule(index, at)
        return _run(definition, state, index, at, now)
    reason = exit_reason(definition, state.contact, state.event)
    if reason is not None:
        return Exit(reason, index)
    since = _shift(at, -step.timeout)
    arrival = state.arrival
    if (
        arrival is not None
        and since <= arrival.at < at
        and wait_matches(step, arrival.event, state.contact)
    ):
        if step.on_event == "exit":
            return Exit(ExitReason.WAIT_EVENT, index)
        return _run(definition, state, index + 1, arrival.at, now)
    if at <= now:
        if step.on_timeout == "exit":
            return Exit(ExitReason.WAIT_TIMEOUT, index)
        return _run(definition, state, index + 1, at, now)
    return Wait(index, step.event, step.conditions, since, at)


def _run(
    definition: Definition, state: EnrolmentState, index: int, due: datetime, now: datetime
) -> Decision:
    """Run steps from `index`, due at `due`, until one needs the app or the future."""
    steps = definition.steps
    scope = context(state.contact, state.event)
    while index < len(steps):
        reason = exit_reason(definition, state.contact, state.event)
        if reason is not None:
            return Exit(reason, index)
        step = steps[index]
        if isinstance(step, EmailStep):
            return SendEmail(index, step.template, due, _enter(definition, index + 1, due))
        if isinstance(step, ConditionStep):
            holds = evaluate(step.condition, scope)
            if (step.on_true if holds else step.on_false) == "exit":
                return Exit(ExitReason.CONDITION, index)
        elif isinstance(step, DelayStep):
            due = _shift(due, step.duration)
            if due > now:
                return _pending(definition, index + 1, due)
        else:
            timeout_at = _shift(due, step.timeout)
            if timeout_at > now:
                return Wait(index, step.event, step.conditions, due, timeout_at)
            # The whole wait passed while nobody looked (e.g. workers were down): a timeout.
            if step.on_timeout == "exit":
                return Exit(ExitReason.WAIT_TIMEOUT, index)
            due = timeout_at
        index += 1
    return Complete()


def _pending(definition: Definition, index: int, due: datetime) -> Schedule | Wait:
    """The decision for a step that falls due in the future."""
    steps = definition.steps
    step = steps[index] if index < len(steps) else None
    if isinstance(step, WaitStep):
        return Wait(index, step.event, step.conditions, due, _shift(due, step.timeout))
    return Schedule(index, due)


def _enter(definition: Definition, index: int, due: datetime) -> Position:
    """The position of step `index` falling due at `due` (a wait stores its deadline)."""
    steps = definition.steps
    step = steps[index] if index < len(steps) else None
    if isinstance(step, WaitStep):
        return Position(index, _shift(due, step.timeout))
    return Position(index, due)


def _shift(moment: datetime, delta: timedelta) -> datetime:
    """Add a duration, saturating at the calendar's ends instead of raising OverflowError."""
    try:
        return moment + delta
    except OverflowError:
        edge = datetime.max if delta > timedelta(0) else datetime.min
        return edge.replace(tzinfo=moment.tzinfo)

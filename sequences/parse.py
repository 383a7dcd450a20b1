"""Parse a sequence definition, YAML or JSON in any of the three documented dialects.

Each step is recognised on its own, so the dialects may even be mixed:
- guide: `{action: email|delay|condition|wait, template, duration, property, ...}`;
- API shorthand: `{send: <template>}`, `{delay: 1d}`, `{condition: {...}}`, `{wait: {...}}`;
- SDK JSON: `{type: email|delay|condition|wait, templateId, delay?, duration, ...}`, where an
  email's own `delay` (`2d`; `0d` means none) becomes a delay step before it.
Step indexes in the model count those inserted delays; problem locations use the input's indexes.

Triggers: the definition's `trigger: {event, conditions?} | {api: true}` (or a `triggers:` list),
unless the request's own `triggers` list is non-empty, which then replaces them (the API's field
is the one clients edit separately; merging could silently keep a stale trigger). Both are
validated either way. Trigger items are `{event, conditions?}` or `{type: event, eventName,
conditions?}`; conditions are a list, a single condition or `{operator: and, conditions: [...]}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sequences.model import BRANCHES
from sequences.model import REENROL_POLICIES
from sequences.model import ConditionStep
from sequences.model import Definition
from sequences.model import DelayStep
from sequences.model import EmailStep
from sequences.model import EventExit
from sequences.model import EventTrigger
from sequences.model import ExitCondition
from sequences.model import Step
from sequences.model import WaitStep
from sequences.parse_conditions import CONDITION_KEYS
from sequences.parse_conditions import read_condition
from sequences.parse_conditions import read_conditions
from sequences.reading import At
from sequences.reading import DefinitionError
from sequences.reading import Problem
from sequences.reading import choice
from sequences.reading import duration
from sequences.reading import is_absent
from sequences.reading import load_document
from sequences.reading import mapping
from sequences.reading import only_keys
from sequences.reading import text

_TOP_KEYS = ("trigger", "triggers", "reenrol", "steps", "exitConditions")
_ACTIONS = ("email", "delay", "condition", "wait")
_SHORTHANDS = ("send", "delay", "condition", "wait")
_CONDITION_STEP_KEYS = (*CONDITION_KEYS, "onTrue", "onFalse")
_WAIT_KEYS = ("event", "conditions", "timeout", "onEvent", "onTimeout")


def parse_definition(text: str, *, triggers: Any = None) -> Definition:
    """Parse and validate a definition; raise DefinitionError listing every problem found."""
    problems: list[Problem] = []
    root = At(problems, "")
    readable, document = load_document(text, root)
    outside: tuple[EventTrigger, ...] = ()
    if not is_absent(triggers):
        outside = _trigger_list(triggers, At(problems, "triggers", "triggers"))
    definition = _definition(document, root, outside) if readable else None
    if problems or definition is None:
        raise DefinitionError(problems)
    return definition


def _definition(document: object, root: At, outside: tuple[EventTrigger, ...]) -> Definition | None:
    values = mapping(document, root, "a mapping with steps")
    if values is None:
        return None
    only_keys(values, _TOP_KEYS, root)
    inside = _inside_triggers(values, root)
    reenrol = choice(values, "reenrol", REENROL_POLICIES, root)
    steps = _steps(values.get("steps"), root.key("steps"))
    exits = _exit_conditions(values.get("exitConditions"), root.key("exitConditions"))
    return Definition(steps, outside or inside, reenrol, exits)


def _inside_triggers(values: Mapping[str, object], root: At) -> tuple[EventTrigger, ...]:
    raw, listed = values.get("trigger"), values.get("triggers")
    if listed is not None:
        if raw is not None:
            root.key("triggers").fail("give either trigger or triggers, not both")
        return _trigger_list(listed, root.key("triggers"))
    if raw is None:
        return ()
    at = root.key("trigger")
    trigger = mapping(raw, at, "a mapping with event or api: true")
    if trigger is None:
        return ()
    only_keys(trigger, ("event", "conditions", "api"), at)
    if "api" in trigger:
        if trigger["api"] is not True:
            at.key("api").fail(f"expected true, got {trigger['api']!r}")
        if "event" in trigger or "conditions" in trigger:
            at.fail("give either api: true or an event (with conditions), not both")
        return ()
    name = text(trigger, "event", at)
    conditions = read_conditions(trigger.get("conditions"), at.key("conditions"))
    return (EventTrigger(name, conditions),) if name is not None else ()


def _trigger_list(raw: object, at: At) -> tuple[EventTrigger, ...]:
    if not isinstance(raw, list):
        at.fail("expected a list of triggers")
        return ()
    found = []
    for position, item in enumerate(raw):
        here = at.index(position)
        trigger = mapping(item, here, "a trigger mapping")
        if trigger is None:
            continue
        name_key = "event"
        if "type" in trigger:
            name_key = "eventName"
            only_keys(trigger, ("type", "eventName", "conditions"), here)
            if trigger["type"] != "event":
                here.key("type").fail(f"unknown trigger type {trigger['type']!r} (use event)")
                continue
        else:
            only_keys(trigger, ("event", "conditions"), here)
        name = text(trigger, name_key, here)
        conditions = read_conditions(trigger.get("conditions"), here.key("conditions"))
        if name is not None:
            found.append(EventTrigger(name, conditions))
    return tuple(found)


def _steps(raw: object, at: At) -> tuple[Step, ...]:
    if raw is None:
        at.fail("required: a list of steps")
        return ()
    if not isinstance(raw, list):
        at.fail("expected a list of steps")
        return ()
    if not raw:
        at.fail("at least one step is required")
    steps: list[Step] = []
    for position, item in enumerate(raw):
        steps.extend(_step(item, at.index(position)))
    return tuple(steps)


def _step(raw: object, at: At) -> list[Step]:
    values = mapping(raw, at, "a step mapping")
    if values is None:
        return []
    if "action" in values:
        return _typed_step(values, at, "action", "template")
    if "type" in values:
        return _typed_step(values, at, "type", "templateId")
    shorthand = next((key for key in _SHORTHANDS if key in values), None)
    if shorthand is None:
        at.fail("needs an action: email, delay, condition or wait (or send: <template>)")
        return []
    only_keys(values, (shorthand,), at)
    here = at.key(shorthand)
    inner = values[shorthand]
    if shorthand == "send":
        template = text(values, "send", at)
        return [EmailStep(template)] if template is not None else []
    if shorthand == "delay":
        wait = duration(inner, here)
        return [DelayStep(wait)] if wait is not None else []
    body = mapping(inner, here, "a mapping")
    if body is None:
        return []
    if shorthand == "condition":
        only_keys(body, _CONDITION_STEP_KEYS, here)
        return _condition_step(body, here)
    only_keys(body, _WAIT_KEYS, here)
    return _wait_step(body, here)


def _typed_step(
    values: Mapping[str, object], at: At, kind_key: str, template_key: str
) -> list[Step]:
    action = values[kind_key]
    if action not in _ACTIONS:
        at.key(kind_key).fail(f"unknown action {action!r} (use email, delay, condition or wait)")
        return []
    if action == "delay":
        only_keys(values, (kind_key, "duration"), at)
        wait = duration(values.get("duration"), at.key("duration"))
        return [DelayStep(wait)] if wait is not None else []
    if action == "condition":
        only_keys(values, (kind_key, *_CONDITION_STEP_KEYS), at)
        return _condition_step(values, at)
    if action == "wait":
        only_keys(values, (kind_key, *_WAIT_KEYS), at)
        return _wait_step(values, at)
    sdk = kind_key == "type"  # only the SDK dialect has an email's own `delay`
    only_keys(values, (kind_key, template_key, "delay") if sdk else (kind_key, template_key), at)
    steps: list[Step] = []
    if sdk and values.get("delay") is not None:
        before = duration(values["delay"], at.key("delay"), zero=True)
        steps.extend([DelayStep(before)] if before is not None else [])
    template = text(values, template_key, at)
    return [*steps, EmailStep(template)] if template is not None else []


def _condition_step(values: Mapping[str, object], at: At) -> list[Step]:
    condition = read_condition(values, at)
    on_true = choice(values, "onTrue", BRANCHES, at)
    on_false = choice(values, "onFalse", BRANCHES, at)
    return [ConditionStep(condition, on_true, on_false)] if condition is not None else []


def _wait_step(values: Mapping[str, object], at: At) -> list[Step]:
    event = text(values, "event", at)
    conditions = read_conditions(values.get("conditions"), at.key("conditions"))
    timeout = duration(values.get("timeout"), at.key("timeout"))
    on_event = choice(values, "onEvent", BRANCHES, at)
    on_timeout = choice(values, "onTimeout", BRANCHES, at)
    if event is None or timeout is None:
        return []
    return [WaitStep(event, timeout, conditions, on_event, on_timeout)]


def _exit_conditions(raw: object, at: At) -> tuple[ExitCondition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        at.fail("expected a list of exit conditions")
        return ()
    found: list[ExitCondition] = []
    for position, item in enumerate(raw):
        here = at.index(position)
        values = mapping(item, here, "a mapping with event or property")
        if values is None:
            continue
        if "event" in values and "property" in values:
            here.fail("give either event (with conditions) or property, not both")
        elif "event" in values:
            only_keys(values, ("event", "conditions"), here)
            name = text(values, "event", here)
            conditions = read_conditions(values.get("conditions"), here.key("conditions"))
            found.extend([EventExit(name, conditions)] if name is not None else [])
        elif "property" in values:
            only_keys(values, CONDITION_KEYS, here)
            condition = read_condition(values, here)
            found.extend([condition] if condition is not None else [])
        else:
            here.fail("needs event or property")
    return tuple(found)

"""Reading untrusted YAML/JSON: problems that name their location, and typed getters.

Every getter records a problem and returns None instead of raising, so one parse reports every
mistake in a definition at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from typing import Literal
from typing import TypeVar

import yaml

from sequences.durations import MAX_DURATION
from sequences.durations import format_duration
from sequences.durations import parse_duration

Source = Literal["definition", "triggers"]
T = TypeVar("T", bound=str)

MAX_NAME_LENGTH = 200
_ZERO_DURATION = re.compile(r"0[smhdw]")
# Keys people carry over from another dialect, and what this place calls them.
_HINTS = {
    "templateId": "template",
    "template": "templateId",
    "eventName": "event",
    "name": "event",
    "reenroll": "reenrol",
    "field": "property",
    "op": "operator",
    "condition": "conditions",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in the input: where (`steps[2].duration`) and what."""

    location: str
    message: str
    source: Source = "definition"

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class DefinitionError(ValueError):
    """A definition (or the request's triggers) is invalid; `problems` lists every mistake."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))

    def details(self) -> dict[str, list[str]]:
        """Group messages by request field: `definition` or `triggers[0].event` and the like."""
        out: dict[str, list[str]] = {}
        for problem in self.problems:
            if problem.source == "definition":
                whole = problem.location == "definition"  # the text itself, not a field in it
                out.setdefault("definition", []).append(problem.message if whole else str(problem))
            else:
                out.setdefault(problem.location, []).append(problem.message)
        return out


@dataclass(frozen=True, slots=True)
class At:
    """A location in the input being read, and the list its problems go to."""

    problems: list[Problem]
    location: str
    source: Source = "definition"

    def key(self, name: object) -> At:
        """Return the location of a key below this one."""
        path = f"{self.location}.{name}" if self.location else str(name)
        return At(self.problems, path, self.source)

    def index(self, position: int) -> At:
        """Return the location of a list item below this one."""
        return At(self.problems, f"{self.location}[{position}]", self.source)

    def fail(self, message: str) -> None:
        """Record a problem at this location."""
        self.problems.append(Problem(self.location or self.source, message, self.source))


def kind(value: object) -> str:
    """Name a value's type the way a YAML or JSON author would."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "mapping"
    return type(value).__name__


def load_document(text: object, at: At) -> tuple[bool, object]:
    """Parse YAML or JSON text; return (False, None) after recording why it is unreadable."""
    if not isinstance(text, str):
        at.fail(f"expected YAML or JSON text, got {kind(text)}")
        return False, None
    if not text.strip():
        at.fail("empty; expected YAML or JSON with steps")
        return False, None
    json_error = None
    if text.lstrip().startswith(("{", "[")):
        try:
            return True, json.loads(text)
        except json.JSONDecodeError as exc:  # may still be YAML flow style: `{steps: [...]}`
            json_error = f"line {exc.lineno} column {exc.colno}: {exc.msg}"
        except RecursionError:
            at.fail("nested too deeply")
            return False, None
    try:
        return True, yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        at.fail(f"not valid YAML or JSON: {json_error or where + str(exc.problem)}")
    except (yaml.YAMLError, RecursionError) as exc:
        at.fail(f"not valid YAML or JSON: {json_error or type(exc).__name__}")
    return False, None


def mapping(value: object, at: At, expected: str) -> Mapping[str, object] | None:
    """Return the value if it is a mapping, else record `expected a ..., got ...`."""
    if isinstance(value, Mapping):
        return value
    at.fail(f"expected {expected}, got {kind(value)}")
    return None


def only_keys(values: Mapping[str, object], allowed: Collection[str], at: At) -> None:
    """Record every key not in `allowed`, with a hint when it is another dialect's spelling."""
    for key in values:
        if key in allowed:
            continue
        hint = _HINTS.get(key) if isinstance(key, str) else None
        if hint not in allowed and isinstance(key, str):
            hint = next((name for name in allowed if name.lower() == key.lower()), None)
        message = f"did you mean {hint!r}?" if hint else f"expected one of {', '.join(allowed)}"
        at.key(key).fail(f"unknown key ({message})")


def text(values: Mapping[str, object], key: str, at: At, *, required: bool = True) -> str | None:
    """Read a non-empty string of at most 200 characters (kept as written, not trimmed)."""
    raw = values.get(key)
    here = at.key(key)
    if raw is None:
        if required:
            here.fail("required")
        return None
    if not isinstance(raw, str):
        here.fail(f"expected a string, got {kind(raw)}")
        return None
    if not raw.strip():
        here.fail("must not be empty")
        return None
    if len(raw) > MAX_NAME_LENGTH:
        here.fail(f"longer than {MAX_NAME_LENGTH} characters")
        return None
    return raw


def choice(values: Mapping[str, object], key: str, options: tuple[T, ...], at: At) -> T:
    """Read one of `options`; the first is the default when the key is absent or null."""
    raw = values.get(key)
    if raw is None:
        return options[0]
    for option in options:
        if raw == option:
            return option
    at.key(key).fail(f"expected {' or '.join(options)}, got {raw!r}")
    return options[0]


def duration(raw: object, at: At, *, zero: bool = False) -> timedelta | None:
    """Read a duration such as `3d`; with `zero`, `0d` and the like mean no duration (None)."""
    if raw is None:
        at.fail("required (e.g. 30m, 2h, 3d, 1w)")
        return None
    if isinstance(raw, str):
        if zero and _ZERO_DURATION.fullmatch(raw):
            return None
        try:
            value = parse_duration(raw)
        except ValueError:
            pass
        else:
            if value <= MAX_DURATION:
                return value
            at.fail(f"{raw!r} is longer than the maximum of {format_duration(MAX_DURATION)}")
            return None
    at.fail(f"not a duration {raw!r} (use e.g. 30m, 2h, 3d, 1w)")
    return None


def is_absent(value: Any) -> bool:
    """True for None and for an empty list: an optional list that says nothing."""
    return value is None or (isinstance(value, list) and not value)

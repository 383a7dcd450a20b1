"""Sequence definitions and the engine that runs them: pure, strictly typed, no I/O.

Nothing here imports Flask, Celery or the database; the app feeds it text, mappings and times,
and acts on its decisions. These names are the public surface other packages import.
"""

from sequences.conditions import MISSING
from sequences.conditions import evaluate
from sequences.conditions import resolve
from sequences.durations import MAX_DURATION
from sequences.durations import format_duration
from sequences.durations import parse_duration
from sequences.engine import Arrival
from sequences.engine import Complete
from sequences.engine import Decision
from sequences.engine import EnrolmentState
from sequences.engine import Exit
from sequences.engine import Position
from sequences.engine import Schedule
from sequences.engine import SendEmail
from sequences.engine import Wait
from sequences.engine import decide
from sequences.engine import start
from sequences.model import OPERATORS
from sequences.model import Condition
from sequences.model import ConditionStep
from sequences.model import Definition
from sequences.model import DelayStep
from sequences.model import EmailStep
from sequences.model import EventExit
from sequences.model import EventTrigger
from sequences.model import ExitCondition
from sequences.model import ExitReason
from sequences.model import Operator
from sequences.model import Step
from sequences.model import WaitStep
from sequences.parse import parse_definition
from sequences.reading import DefinitionError
from sequences.reading import Problem
from sequences.rules import event_exits
from sequences.rules import exit_reason
from sequences.rules import may_enrol
from sequences.rules import trigger_matches
from sequences.rules import wait_matches

__all__ = [
    "MAX_DURATION",
    "MISSING",
    "OPERATORS",
    "Arrival",
    "Complete",
    "Condition",
    "ConditionStep",
    "Decision",
    "Definition",
    "DefinitionError",
    "DelayStep",
    "EmailStep",
    "EnrolmentState",
    "EventExit",
    "EventTrigger",
    "Exit",
    "ExitCondition",
    "ExitReason",
    "Operator",
    "Position",
    "Problem",
    "Schedule",
    "SendEmail",
    "Step",
    "Wait",
    "WaitStep",
    "decide",
    "evaluate",
    "event_exits",
    "exit_reason",
    "format_duration",
    "may_enrol",
    "parse_definition",
    "parse_duration",
    "resolve",
    "start",
    "trigger_matches",
    "wait_matches",
]

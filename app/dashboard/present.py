"""Turning service data into what the templates show: times, steps, and the metrics chart.

The chart is drawn on the server as an SVG (no script, no chart library): the geometry is worked
out here and `templates/dashboard/_chart.html` only writes it down.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.timeutil import parse_iso
from sequences import ConditionStep
from sequences import Definition
from sequences import DelayStep
from sequences import EmailStep
from sequences import Step
from sequences import WaitStep
from sequences import format_duration

# (metric, label), in the order the chart's legend lists them.
SERIES = (("sent", "Sent"), ("delivered", "Delivered"), ("opened", "Opened"),
          ("clicked", "Clicked"), ("bounced", "Bounced"), ("complained", "Complained"),
          ("unsubscribed", "Unsubscribed"))
RATE_LABELS = (("deliveryRate", "Delivery rate"), ("openRate", "Open rate"),
               ("clickRate", "Click rate"), ("clickToOpenRate", "Click-to-open rate"),
               ("bounceRate", "Bounce rate"), ("complaintRate", "Complaint rate"))


def short_time(value: str | datetime | None) -> str:
    """`2025-06-02 09:15:00` (UTC) from an ISO string or a datetime; empty for None."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else value.isoformat()
    return text[:19].replace("T", " ")


def compact_json(value: Any) -> str:
    """A property value as it was sent (strings without quotes)."""
    return value if isinstance(value, str) else json.dumps(value)


def percent(value: float) -> str:
    """A rate (a fraction) as a percentage with one decimal."""
    return f"{value * 100:.1f}%"


def describe_step(step: Step) -> str:
    """One line saying what a sequence step does."""
    if isinstance(step, EmailStep):
        return f"Send e-mail {step.template}"
    if isinstance(step, DelayStep):
        return f"Wait {format_duration(step.duration)}"
    if isinstance(step, ConditionStep):
        condition = step.condition
        value = "" if condition.value is None else f" {compact_json(condition.value)}"
        return (f"If {condition.path} {condition.operator}{value}: "
                f"{step.on_true} when true, {step.on_false} when false")
    if isinstance(step, WaitStep):
        return (f"Wait up to {format_duration(step.timeout)} for {step.event}: "
                f"{step.on_event} on the event, {step.on_timeout} on timeout")
    return str(step.action)


def describe_triggers(definition: Definition) -> str:
    """How contacts join: the trigger events, or the API only."""
    if definition.api_only:
        return "Enrolment through the API only"
    return "On " + ", ".join(sorted(definition.trigger_events))


# --- the chart -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One metric's line: SVG points, and dots where there are few enough buckets to see them."""

    metric: str
    label: str
    points: str
    dots: list[tuple[float, float]]


@dataclass(frozen=True)
class Chart:
    """Everything the SVG needs, in its own coordinates (`0 0 width height`)."""

    name: str
    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    lines: list[Line]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]


def _nice_top(peak: int) -> tuple[int, int]:
    """A round top for the y axis at or above `peak`, and the step between four gridlines."""
    raw = max(peak, 4) / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return int(step * 4), int(step)


def _bucket_label(at: datetime, period: str) -> str:
    if period == "hour":
        return at.strftime("%b %-d %H:00")
    if period == "month":
        return at.strftime("%b %Y")
    return at.strftime("%b %-d")


def line_chart(timeseries: list[dict[str, Any]], *, name: str, period: str, width: int,
               height: int, labels: int) -> Chart:
    """Lay out the metrics' time series as lines over `labels` x-axis labels at most."""
    left, top, right, bottom = 44, 12, width - 12, height - 28
    peak = max((bucket[metric] for bucket in timeseries for metric, _ in SERIES), default=0)
    y_max, y_step = _nice_top(peak)
    count = len(timeseries)

    def x_of(index: int) -> float:
        return (left + right) / 2 if count < 2 else left + index * (right - left) / (count - 1)

    def y_of(value: int) -> float:
        return bottom - value * (bottom - top) / y_max

    lines = []
    for metric, label in SERIES:
        coordinates = [(round(x_of(i), 1), round(y_of(bucket[metric]), 1))
                       for i, bucket in enumerate(timeseries)]
        lines.append(Line(metric, label, " ".join(f"{x},{y}" for x, y in coordinates),
                          coordinates if count <= 62 else []))
    y_ticks = [(round(y_of(value), 1), str(value)) for value in range(0, y_max + 1, y_step)]
    every = max(1, math.ceil(count / labels))
    x_ticks = [(round(x_of(i), 1), _bucket_label(parse_iso(bucket["timestamp"]), period))
               for i, bucket in enumerate(timeseries) if i % every == 0]
    return Chart(name, width, height, left, top, right, bottom, lines, y_ticks, x_ticks)

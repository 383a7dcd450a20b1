"""What the dashboard's templates are given: step lines, times, and the chart's geometry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from app.dashboard import present
from sequences import Condition
from sequences import ConditionStep
from sequences import DelayStep
from sequences import EmailStep
from sequences import WaitStep


def _bucket(day: int, **counts: int) -> dict[str, Any]:
    metrics = dict.fromkeys(("sent", "delivered", "opened", "clicked", "bounced", "complained",
                             "unsubscribed"), 0)
    return {"timestamp": f"2025-06-0{day}T00:00:00.000Z", **metrics, **counts}


def test_steps_read_as_sentences() -> None:
    assert present.describe_step(EmailStep("welcome")) == "Send e-mail welcome"
    assert present.describe_step(DelayStep(timedelta(days=3))) == "Wait 3d"
    condition = ConditionStep(Condition("contact.properties.plan", "equals", "pro"),
                              on_false="exit")
    assert present.describe_step(condition) == (
        "If contact.properties.plan equals pro: continue when true, exit when false")
    wait = WaitStep("purchase", timedelta(hours=2), on_event="exit")
    assert present.describe_step(wait) == (
        "Wait up to 2h for purchase: exit on the event, continue on timeout")


def test_times_and_values() -> None:
    assert present.short_time("2025-06-02T09:15:00.123Z") == "2025-06-02 09:15:00"
    assert present.short_time(None) == ""
    assert present.compact_json("plain") == "plain"
    assert present.compact_json(True) == "true" and present.compact_json(4.5) == "4.5"
    assert present.percent(0.6667) == "66.7%"


def test_the_chart_scales_to_a_round_top() -> None:
    series = [_bucket(1, sent=3), _bucket(2, sent=7, delivered=6), _bucket(3)]
    chart = present.line_chart(series, name="wide", period="day", width=720, height=300,
                               labels=8)
    assert [label for _, label in chart.y_ticks] == ["0", "2", "4", "6", "8"]
    sent = chart.lines[0]
    assert sent.metric == "sent" and sent.label == "Sent"
    (x1, y1), (x2, y2), (x3, y3) = sent.dots
    assert x1 == chart.left and x3 == chart.right and x1 < x2 < x3
    assert y3 == chart.bottom and y2 < y1 < y3  # 7 is higher on screen than 3
    assert y2 == round(chart.bottom - 7 * (chart.bottom - chart.top) / 8, 1)
    assert sent.points == f"{x1},{y1} {x2},{y2} {x3},{y3}"
    assert [label for _, label in chart.x_ticks] == ["Jun 1", "Jun 2", "Jun 3"]


def test_an_empty_chart_and_many_buckets() -> None:
    empty = present.line_chart([_bucket(1)], name="narrow", period="day", width=360,
                               height=260, labels=4)
    assert [label for _, label in empty.y_ticks] == ["0", "1", "2", "3", "4"]
    assert empty.lines[0].dots == [((empty.left + empty.right) / 2, empty.bottom)]
    hours = [{**_bucket(1), "timestamp": f"2025-06-01T{hour:02}:00:00.000Z"}
             for hour in range(24)] * 3
    busy = present.line_chart(hours, name="wide", period="hour", width=720, height=300,
                              labels=8)
    assert busy.lines[0].dots == []  # 72 points: a line only
    assert len(busy.x_ticks) <= 8 and busy.x_ticks[0][1] == "Jun 1 00:00"

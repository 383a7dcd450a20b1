from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequences import format_duration
from sequences import parse_duration

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@given(amount=st.integers(min_value=1, max_value=9_999_999), unit=st.sampled_from("smhdw"))
def test_amount_times_unit(amount: int, unit: str) -> None:
    assert parse_duration(f"{amount}{unit}") == timedelta(seconds=amount * UNIT_SECONDS[unit])


@pytest.mark.parametrize("text", ["", "3", "d", "0d", "-1d", "1.5h", "3 d", "3D", "1y", "01m"])
def test_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@given(amount=st.integers(min_value=1, max_value=9_999_999), unit=st.sampled_from("smhdw"))
def test_formatting_round_trips(amount: int, unit: str) -> None:
    duration = parse_duration(f"{amount}{unit}")
    spelled = format_duration(duration)
    assert parse_duration(spelled) == duration
    assert format_duration(parse_duration(spelled)) == spelled  # the spelling is canonical
    assert len(spelled) <= len(f"{amount}{unit}")


@pytest.mark.parametrize(
    ("duration", "spelled"),
    [
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=60), "1h"),
        (timedelta(hours=48), "2d"),
        (timedelta(days=7), "1w"),
        (timedelta(days=10), "10d"),
    ],
)
def test_formatting_picks_the_largest_exact_unit(duration: timedelta, spelled: str) -> None:
    assert format_duration(duration) == spelled


@pytest.mark.parametrize("duration", [timedelta(0), timedelta(seconds=-1), timedelta(seconds=1.5)])
def test_formatting_rejects_what_no_step_can_hold(duration: timedelta) -> None:
    with pytest.raises(ValueError, match="positive whole number of seconds"):
        format_duration(duration)

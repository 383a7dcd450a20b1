from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequences import parse_duration

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@given(amount=st.integers(min_value=1, max_value=9_999_999), unit=st.sampled_from("smhdw"))
def test_amount_times_unit(amount: int, unit: str) -> None:
    assert parse_duration(f"{amount}{unit}") == timedelta(seconds=amount * UNIT_SECONDS[unit])


@pytest.mark.parametrize("text", ["", "3", "d", "0d", "-1d", "1.5h", "3 d", "3D", "1y", "01m"])
def test_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)

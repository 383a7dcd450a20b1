"""The ingest messages' serializer gives back exactly what it was given, or refuses to write it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from kombu import serialization as kombu_serialization
from kombu.exceptions import EncodeError

from tasks import serialization

_VALUES = st.one_of(st.none(), st.booleans(), st.text(),
                    st.integers(min_value=-(2**63), max_value=2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False))
_EVENTS = st.lists(st.dictionaries(st.text(max_size=8), _VALUES, max_size=6), max_size=20)


def _round_trip(value: Any) -> Any:
    serialization.register()
    content_type, encoding, data = kombu_serialization.dumps(value, serializer=serialization.NAME)
    return kombu_serialization.loads(data, content_type, encoding,
                                     accept=[serialization.CONTENT_TYPE])


@settings(max_examples=300, deadline=None)
@given(_EVENTS)
def test_what_it_writes_it_reads_back_exactly(events: list[dict[str, Any]]) -> None:
    try:
        back = _round_trip(((events,), {}, {}))
    except EncodeError:  # lone surrogates: refused, never altered
        return
    assert back == [[events], {}, {}]
    assert [[type(value) for value in event.values()] for event in back[0][0]] == [
        [type(value) for value in event.values()] for event in events]


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**70])
def test_integers_beyond_64_bits_are_refused_not_rounded(value: int) -> None:
    with pytest.raises(EncodeError):
        _round_trip({"n": value})

"""`plain_track_event`: whenever it answers, it answers exactly what TrackEventSchema loads.

It may give up on a valid body (the schema then loads it), but it must never accept a body the
schema refuses, nor load one differently. The bodies below are generated around every rule's
edges: reserved `email.*` names, lengths one either side of each limit, property value types,
unstorable text, timestamps near the year and future limits, and e-mail syntax.
"""

from __future__ import annotations

import json
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest
from email_validator import EmailNotValidError
from email_validator import validate_email
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from app.schemas.events import TrackBatchSchema
from app.schemas.events import TrackEventSchema
from app.schemas.events import plain_batch_events
from app.schemas.events import plain_track_event
from app.schemas.fields import plain_email

_SCHEMA = TrackEventSchema()


def _schema_load(body: Any) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = _SCHEMA.load(body)
    except ValidationError:
        return None
    return data


def _exactly(data: dict[str, Any] | None) -> dict[str, str] | None:
    """A comparable form that tells True from 1 and the order of properties apart."""
    if data is None:
        return None
    return {key: json.dumps(value, default=repr) for key, value in data.items()}


def _text_near(limit: int) -> st.SearchStrategy[str]:
    return st.sampled_from([limit - 1, limit, limit + 1]).map(lambda n: "x" * max(n, 0))


_ODD_TEXT = st.sampled_from(["", "a\x00b", "lone \ud800 surrogate", "Ünïcode ✓", " padded "])
_NAMES = st.one_of(
    st.sampled_from(["page.viewed", "email", "Email.sent", "emails.x", "e"]),
    st.text(max_size=12).map(lambda tail: "email." + tail),
    _text_near(200), _ODD_TEXT, st.text(max_size=30),
    st.sampled_from([None, 42, 1.5, True, ["a"], {"a": 1}]))
_EMAILS = st.one_of(
    st.sampled_from(["ann@acme.test", "Alice.Smith@Example.COM", "a@b", "a@localhost",
                     "not-an-email", "a@", "@b.com", "a b@c.com", "", "ü@exämple.com",
                     "x" * 310 + "@acme.test", "x" * 320 + "@a.com", "a@b.local",
                     "user+tag@sub.example.org", "a..b@acme.test", ".a@acme.test",
                     "a@-acme.test", "a@acme..test", "a@123.456", "a\x00@acme.test"]),
    st.emails(), st.text(max_size=20),
    st.sampled_from([None, 42, True, ["a@b.com"]]))
_PROPERTY_VALUES = st.one_of(
    st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    _text_near(2000), _ODD_TEXT, st.sampled_from([None, [], [1], {}, {"a": 1}]))
_PROPERTY_KEYS = st.one_of(st.text(max_size=10), _text_near(100), _ODD_TEXT)
_PROPERTIES = st.one_of(
    st.dictionaries(_PROPERTY_KEYS, _PROPERTY_VALUES, max_size=5),
    st.sampled_from([99, 100, 101]).map(lambda n: {f"k{i}": i for i in range(n)}),
    st.sampled_from([None, [], "x", 1]))


def _iso(moment: datetime, style: int) -> str:
    return [moment.isoformat(), moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            moment.strftime("%Y-%m-%d"), moment.strftime("%Y-%m-%dT%H:%M:%S+05:30"),
            moment.strftime("%Y-%m-%dT%H:%M:%S-01:00")][style]


_NEAR_LIMITS = st.sampled_from([
    timedelta(days=1, minutes=-5), timedelta(days=1, minutes=5), timedelta(days=-400),
    timedelta(0), timedelta(hours=-30)]).map(lambda delta: datetime.now(UTC) + delta)
_TIMESTAMPS = st.one_of(
    st.builds(_iso, st.one_of(st.datetimes(), _NEAR_LIMITS,
                              st.datetimes(timezones=st.timezones())),
              st.integers(min_value=0, max_value=4)),
    st.sampled_from(["0999-12-31T23:59:59Z", "1000-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00",
                     "0001-01-01T00:00:00+01:00", "2025-13-01T00:00:00Z", "yesterday", "",
                     " 2025-06-01T10:00:00Z ", "2025-06-01T10:00:00.123456+00:00"]),
    st.text(max_size=12), st.sampled_from([None, 0, 1.5, True, []]))
_CONTACT_IDS = st.sampled_from([None, "cnt_01J0000000000000000000000", "", 42])

EVENT_BODIES = st.fixed_dictionaries({}, optional={
    "email": _EMAILS, "contactId": _CONTACT_IDS, "event": _NAMES, "name": _NAMES,
    "properties": _PROPERTIES, "timestamp": _TIMESTAMPS,
    "extra": st.just(1), "Event": st.just("x")})

_VALID_COMMON = st.fixed_dictionaries(
    {"email": st.sampled_from(["ann@acme.test", "Alice.Smith@Example.COM",
                               "user+tag@sub.example.org"]),
     "event": st.text(min_size=1, max_size=200).filter(
         lambda name: not name.startswith("email.") and "\x00" not in name)},
    optional={"properties": st.dictionaries(
                  st.text(min_size=1, max_size=100).filter(lambda key: "\x00" not in key),
                  st.one_of(st.booleans(), st.integers(), st.text(max_size=50).filter(
                      lambda text: "\x00" not in text),
                            st.floats(allow_nan=False, allow_infinity=False)), max_size=10),
              "timestamp": st.builds(_iso, st.datetimes(min_value=datetime(1000, 1, 2),
                                                        max_value=datetime(2025, 1, 1)),
                                     st.integers(min_value=0, max_value=3))})


@settings(max_examples=1500)
@given(EVENT_BODIES)
@example({"email": "a@acme.test", "event": "ok", "name": "email.sent"})
@example({"email": "a@acme.test", "name": "email.sent"})
@example({"email": "a@acme.test", "event": None, "name": "ok"})
@example({"email": "a@acme.test", "event": "ok", "contactId": None, "timestamp": None,
          "properties": None})
def test_it_never_accepts_what_the_schema_refuses_nor_loads_differently(body: Any) -> None:
    plain = plain_track_event(body)

    if plain is not None:
        assert _exactly(plain) == _exactly(_schema_load(body))


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers())))
def test_bodies_that_are_not_objects_are_left_to_the_schema(body: Any) -> None:
    assert plain_track_event(body) is None


@settings(max_examples=300)
@given(_VALID_COMMON)
def test_it_answers_for_the_common_valid_body(body: dict[str, Any]) -> None:
    plain = plain_track_event(body)

    assert plain is not None
    assert _exactly(plain) == _exactly(_schema_load(body))


_BATCH_ITEMS = st.one_of(st.none(), st.integers(), st.text(max_size=3),
                         st.just({"email": "a@acme.test", "event": "ok"}), st.just([]))
_BATCH_BODIES = st.one_of(
    st.fixed_dictionaries({"events": st.lists(_BATCH_ITEMS, max_size=6)}),
    st.fixed_dictionaries({"events": st.lists(_BATCH_ITEMS, max_size=3)},
                          optional={"extra": st.integers(), "Events": st.none()}),
    st.fixed_dictionaries({"events": st.one_of(st.none(), st.text(), st.integers(),
                                               st.dictionaries(st.text(), st.integers()))}),
    st.builds(lambda n: {"events": [{"event": "ok"}] * n}, st.sampled_from([499, 500, 501])),
    st.just({}), st.none(), st.lists(st.integers()))


@settings(max_examples=500)
@given(_BATCH_BODIES)
def test_the_batch_check_answers_only_what_the_schema_loads(body: Any) -> None:
    plain = plain_batch_events(body)
    if plain is None:
        return
    assert plain == TrackBatchSchema().load(body)["events"]
    assert [type(item) for item in plain] == [type(item) for item in body["events"]]


def test_the_batch_check_takes_the_common_batch() -> None:
    items = [{"email": "a@acme.test", "event": "ok"}] * 500
    assert plain_batch_events({"events": items}) == items
    assert plain_batch_events({"events": [*items, items[0]]}) is None  # 501: the schema says so
    assert plain_batch_events({"events": [items[0], None]}) is None


# --- plain_email: whenever it answers, it answers what email-validator normalises ---------------

def _library_email(value: str) -> str | None:
    try:
        return validate_email(value, check_deliverability=False, test_environment=True).normalized
    except EmailNotValidError:
        return None


_LOCAL_CHARS = "aZ09._+-!#'~`{|}\"(),:;<>@[\\] é\x00\t"
_DOMAIN_CHARS = "aZ09-._ é"
_TOP_LEVELS = ["com", "test", "local", "localhost", "arpa", "invalid", "onion", "c0m", "c-m",
               "-com", "com-", "x", "7", "xn--p1ai", "ab--c", "TEST", "Com", ""]
_ADDRESSES = st.one_of(
    st.builds(lambda local, labels, top: f"{local}@{'.'.join([*labels, top])}",  # mostly valid
              st.text("aZ09.+-_'", min_size=1, max_size=20),
              st.lists(st.text("aZ09-", min_size=1, max_size=64), min_size=1, max_size=3),
              st.sampled_from(_TOP_LEVELS)),
    st.builds(lambda local, labels, top: f"{local}@{'.'.join([*labels, top])}",
              st.text(_LOCAL_CHARS, min_size=0, max_size=70),
              st.lists(st.text(_DOMAIN_CHARS, min_size=0, max_size=65), max_size=4),
              st.sampled_from(_TOP_LEVELS)),
    st.sampled_from(["Postmaster@Acme.COM", "ABUSE@x.org", "Info.Desk@x.org", "a@test",
                     "x" * 240 + "@acme.test", "x" * 250 + "@acme.test",
                     "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com",
                     "a@" + ".".join(["b" * 60] * 4) + ".com", "a@@b.com", "a@b.com@c.com"]),
    st.text(max_size=40))


@settings(max_examples=3000, deadline=None)
@given(_ADDRESSES)
@example("Alice.Smith@Example.COM")
@example("user+tag@sub.example.co.uk")
def test_plain_email_answers_only_what_email_validator_normalises(value: str) -> None:
    plain = plain_email(value)

    if plain is not None:
        assert plain == _library_email(value)


@pytest.mark.parametrize(("value", "normalised"), [
    ("Alice.Smith@Example.COM", "Alice.Smith@example.com"),
    ("user+tag@sub.example.co.uk", "user+tag@sub.example.co.uk"),
    ("Postmaster@Acme.COM", "postmaster@acme.com"),
    ("ann@acme.test", "ann@acme.test"),
    ("o'brien@x-y.org", "o'brien@x-y.org"),
])
def test_plain_email_settles_common_addresses_itself(value: str, normalised: str) -> None:
    assert plain_email(value) == normalised == _library_email(value)

"""The PostgreSQL seam stores exactly what SQLAlchemy's own insert stores, in the caller's
transaction, and refuses rows it could not store faithfully."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Column
from sqlalchemy import Float
from sqlalchemy import Integer
from sqlalchemy import MetaData
from sqlalchemy import Table
from sqlalchemy import select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.exc import IntegrityError

from app import db
from app import postgres
from app.models import Contact
from app.models import Event
from tests.support import backend

pytestmark = pytest.mark.skipif(backend() != "postgres", reason="PostgreSQL-only statements")

EVENTS: Table = Event.__table__  # type: ignore[assignment]
CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
AWKWARD_PROPERTIES: dict[str, Any] = {
    "quote": 'say "hi"\\ or \'bye\'', "emoji": "🚀 ünïcödé ✓", "newline": "a\nb\tc",
    "big": 2**53 + 1, "negative": -17, "float": 0.1 + 0.2, "tiny": 5e-324, "yes": True,
    "no": False, "nothing": None, "empty": "", "json-ish": '{"a": [1, 2]}',
}


def _event_row(event_id: str, **changes: Any) -> dict[str, Any]:
    row = {"id": event_id, "tenant_id": "ten_x", "contact_id": "cnt_x", "email": "a@example.com",
           "name": "order.paid", "properties": AWKWARD_PROPERTIES, "source": "api",
           "timestamp": datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC),
           "created_at": datetime(2026, 3, 1, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
           "feed_seq": 2**40}
    return {**row, **changes}


def _stored(event_id: str) -> dict[str, Any]:
    with db.transaction() as session:
        row = session.execute(select(*EVENTS.c).where(EVENTS.c.id == event_id)).one()
    return {key: value for key, value in row._mapping.items() if key != "id"}


def test_rows_are_stored_exactly_as_sqlalchemy_stores_them(app: Flask) -> None:
    with db.transaction() as session:
        session.execute(pg_dialect.insert(EVENTS), [_event_row("evt_core")])
        new = postgres.insert_ignoring_conflicts(session, EVENTS, [_event_row("evt_seam")],
                                                 ["id"])

    assert new == [("evt_seam",)]
    assert _stored("evt_seam") == _stored("evt_core")
    assert _stored("evt_seam")["properties"] == AWKWARD_PROPERTIES
    assert _stored("evt_seam")["created_at"] == datetime(2026, 3, 1, 12, 0, 0, 1, tzinfo=UTC)


def test_only_new_rows_come_back_and_duplicates_change_nothing(app: Flask) -> None:
    with db.transaction() as session:
        postgres.insert_ignoring_conflicts(session, EVENTS, [_event_row("evt_1")], ["id"])
    with db.transaction() as session:
        new = postgres.insert_ignoring_conflicts(
            session, EVENTS, [_event_row("evt_1", name="changed"), _event_row("evt_2"),
                              _event_row("evt_2", name="twice in one batch")], ["id"])

    assert new == [("evt_2",)]
    assert _stored("evt_1")["name"] == "order.paid"
    assert _stored("evt_2")["name"] == "order.paid"


def test_it_runs_in_the_callers_transaction_after_the_orms_pending_rows(app: Flask,
                                                                         tenant: Any) -> None:
    row = {"id": "cnt_1", "tenant_id": tenant.id, "email": "b@example.com", "properties": {},
           "subscribed": True, "suppressed": False, "created_at": datetime.now(UTC),
           "updated_at": datetime.now(UTC)}
    with pytest.raises(RuntimeError), db.transaction() as session:
        # Flushed first, so the seam's insert clashes with it instead of passing it by.
        session.add(Contact(**{**row, "id": "cnt_orm"}))
        new = postgres.insert_ignoring_conflicts(session, CONTACTS, [row],
                                                 ["tenant_id", "email"])
        assert new == []
        raise RuntimeError("roll back")

    with db.transaction() as session:
        assert session.scalars(select(Contact.id)).all() == []


def test_a_row_missing_a_column_with_a_python_default_is_refused(app: Flask) -> None:
    row = _event_row("evt_no_source")
    del row["source"]
    with pytest.raises(ValueError, match="must give source"), db.transaction() as session:
        postgres.insert_ignoring_conflicts(session, EVENTS, [row], ["id"])

    with db.transaction() as session:
        assert session.scalars(select(Event.id)).all() == []


def test_rows_with_different_columns_are_refused(app: Flask) -> None:
    short = {key: value for key, value in _event_row("evt_b").items() if key != "feed_seq"}
    with pytest.raises(ValueError, match="same columns"), db.transaction() as session:
        postgres.insert_ignoring_conflicts(session, EVENTS, [_event_row("evt_a"), short], ["id"])

    # As many columns, but another one: feed_seq would have been stored as NULL.
    renamed = {**short, "email_x": "a@example.com"}
    with pytest.raises(ValueError, match="same columns"), db.transaction() as session:
        postgres.insert_ignoring_conflicts(session, EVENTS, [_event_row("evt_a"), renamed],
                                           ["id"])


def test_fetch_all_gives_plain_rows_and_nothing_for_a_statement_without_rows(app: Flask
                                                                          ) -> None:
    with db.transaction() as session:
        assert postgres.fetch_all(session, "SELECT %s::int + 1, %s", (41, "x")) == [(42, "x")]
        assert postgres.fetch_all(session, "SET LOCAL statement_timeout = 1000", ()) == []


def test_a_failing_statement_raises_what_sqlalchemy_would_without_the_rows(app: Flask) -> None:
    row = {"id": "cnt_1", "tenant_id": "ten_gone", "email": "secret@example.com",
           "properties": {}, "subscribed": True, "suppressed": False,
           "created_at": datetime.now(UTC), "updated_at": datetime.now(UTC)}
    with pytest.raises(IntegrityError) as raised, db.transaction() as session:
        postgres.insert_ignoring_conflicts(session, CONTACTS, [row], ["tenant_id", "email"])

    assert "secret@example.com" not in str(raised.value)


# --- COPY for rows that are almost always new ----------------------------------------------------

AWKWARD_TEXT = 'a "quoted", \\back\\slashed\\" "null" ünï 🚀'


def _copy(session: Any, rows: list[dict[str, Any]]) -> bool:
    payload = postgres.encode_for_copy(EVENTS, rows)
    assert payload is not None
    return postgres.copy_in(session, payload)


def test_copied_rows_are_stored_exactly_as_sqlalchemy_stores_them(app: Flask) -> None:
    awkward = {"email": AWKWARD_TEXT, "name": "null", "source": ""}
    with db.transaction() as session:
        session.execute(pg_dialect.insert(EVENTS), [_event_row("evt_core", **awkward),
                                                    _event_row("evt_core_null", feed_seq=None)])
        copied = _copy(session, [
            _event_row("evt_copy", **awkward), _event_row("evt_copy_null", feed_seq=None),
            _event_row("evt_copy_huge", properties={"huge": 2**70, "tiny": -(2**70)})])

    assert copied is True
    assert _stored("evt_copy") == _stored("evt_core")
    assert _stored("evt_copy")["email"] == AWKWARD_TEXT
    assert _stored("evt_copy")["name"] == "null"
    assert _stored("evt_copy")["properties"] == AWKWARD_PROPERTIES
    assert _stored("evt_copy_null") == _stored("evt_core_null")
    assert _stored("evt_copy_null")["feed_seq"] is None
    # Beyond orjson's 64 bits: the document is written by the standard library, exactly.
    assert _stored("evt_copy_huge")["properties"] == {"huge": 2**70, "tiny": -(2**70)}


def test_a_pending_column_is_given_when_the_rows_are_copied(app: Flask) -> None:
    rows = [{key: value for key, value in _event_row(event_id).items() if key != "feed_seq"}
            for event_id in ("evt_a", "evt_b", "evt_c")]
    payload = postgres.encode_for_copy(EVENTS, rows, pending="feed_seq")
    assert payload is not None
    with db.transaction() as session:
        assert postgres.copy_in(session, payload, [7, None, 2**40]) is True

    assert [_stored(event_id)["feed_seq"] for event_id in ("evt_a", "evt_b", "evt_c")] == [
        7, None, 2**40]


def test_a_clash_copies_nothing_and_leaves_the_transaction_as_it_was(app: Flask) -> None:
    with db.transaction() as session:
        postgres.insert_ignoring_conflicts(session, EVENTS, [_event_row("evt_old")], ["id"])
    with db.transaction() as session:
        postgres.insert_ignoring_conflicts(session, EVENTS, [_event_row("evt_before")], ["id"])
        copied = _copy(session, [_event_row("evt_new"), _event_row("evt_old", name="again")])
        assert copied is False
        # The transaction goes on: what it did before the COPY stays, the COPY left nothing.
        postgres.insert_ignoring_conflicts(session, EVENTS, [_event_row("evt_after")], ["id"])

    with db.transaction() as session:
        assert sorted(session.scalars(select(Event.id))) == ["evt_after", "evt_before", "evt_old"]
    assert _stored("evt_old")["name"] == "order.paid"


@pytest.mark.parametrize("changes", [
    {"name": "tab\there"},                      # a control character CSV would not carry
    {"email": "line\nbreak@example.com"},
    {"email": "lone \udc80 surrogate"},         # orjson refuses it
])
def test_rows_copy_cannot_carry_are_not_encoded(changes: dict[str, Any]) -> None:
    assert postgres.encode_for_copy(EVENTS, [_event_row("evt_a"),
                                             _event_row("evt_b", **changes)]) is None


def test_a_missing_json_document_is_sql_null_in_copy_as_in_the_insert() -> None:
    payload = postgres.encode_for_copy(EVENTS, [_event_row("evt_a", properties=None)])
    assert payload is not None
    assert b',"order.paid",null,"api",' in payload.lines[0]


def test_copy_refuses_a_column_type_it_cannot_write_faithfully() -> None:
    measures = Table("measures", MetaData(), Column("id", Integer, primary_key=True),
                     Column("value", Float))
    with pytest.raises(ValueError, match="cannot carry value"):
        postgres.encode_for_copy(measures, [{"id": 1, "value": float("nan")}])


def _new_rows(session: Any, rows: list[dict[str, Any]]) -> list[Any]:
    pending = [row.pop("feed_seq") for row in rows]
    new_rows = db.NewRows(session, EVENTS, rows, key="id", pending="feed_seq")
    for row, position in zip(rows, pending, strict=True):
        row["feed_seq"] = position  # filled in after encoding, as the feed's lock allows
    return new_rows.insert()


def test_new_rows_come_back_all_when_copied_and_only_new_ones_after_a_clash(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "COPY_MIN_ROWS", 1)  # COPY for these few rows too
    copies = []
    real_copy_in = postgres.copy_in
    monkeypatch.setattr(postgres, "copy_in", lambda *args: copies.append(real_copy_in(*args))
                        or copies[-1])
    with db.transaction() as session:
        first = _new_rows(session, [_event_row("evt_1", feed_seq=1)])
    with db.transaction() as session:
        redelivered = _new_rows(session, [_event_row("evt_1", name="changed", feed_seq=2),
                                          _event_row("evt_2", feed_seq=3)])
    with db.transaction() as session:
        uncopyable = _new_rows(session, [_event_row("evt_3", feed_seq=4),
                                         _event_row("evt_4", name="tab\there", feed_seq=5)])

    assert copies == [True, False]  # the redelivery clashed; the tab never got to COPY
    assert (first, redelivered, uncopyable) == (["evt_1"], ["evt_2"], ["evt_3", "evt_4"])
    assert [_stored(event_id)["feed_seq"] for event_id in ("evt_1", "evt_2", "evt_3", "evt_4")
            ] == [1, 3, 4, 5]
    assert _stored("evt_1")["name"] == "order.paid"
    assert _stored("evt_4")["name"] == "tab\there"


def test_a_few_new_rows_take_the_one_statement_insert(app: Flask,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "copy_in", lambda *args: pytest.fail("COPY for a few rows"))
    with db.transaction() as session:
        assert _new_rows(session, [_event_row("evt_1", feed_seq=1)]) == ["evt_1"]
    assert _stored("evt_1")["feed_seq"] == 1

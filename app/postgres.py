"""PostgreSQL-only forms of the hottest statements: the one seam for PostgreSQL optimisations.

SQLAlchemy spends a few hundred microseconds of Python on every statement it runs (execution
context, parameter processing, result rows), and the psycopg2 driver adapts multi-row VALUES
one parameter at a time. On the ingest path, a handful of statements per message, that was most
of the worker's time: storing 16 events cost ~6 ms of CPU, of which ~4 were this overhead. The
functions here run on the session's own DBAPI connection (so inside the caller's transaction,
after flushing what the ORM holds) and hand PostgreSQL whole row sets as one JSON document.
SQLite keeps the portable SQLAlchemy forms; `app.db.is_postgres` chooses.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

import orjson
import psycopg2
from sqlalchemy import JSON
from sqlalchemy import BigInteger
from sqlalchemy import Boolean
from sqlalchemy import DateTime
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Table
from sqlalchemy import TextClause
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app import json_codec
from app.timeutil import as_utc

_DIALECT = postgresql.psycopg2.dialect()  # type: ignore[no-untyped-call]


def pyformat(statement: TextClause) -> str:
    """A `text()` statement's SQL with psycopg2's `%(name)s` placeholders (compile once)."""
    return str(statement.compile(dialect=_DIALECT))


@contextmanager
def _cursor(db: Session, sql: str) -> Iterator[Any]:
    """A psycopg2 cursor in the session's transaction, for running `sql` (named in errors)."""
    db.flush()  # what the ORM still holds must be in the database before we read around it
    cursor = db.connection().connection.cursor()
    try:
        yield cursor
    except psycopg2.Error as error:
        # As SQLAlchemy would raise it (IntegrityError, OperationalError, ...), so callers
        # handle failures the same on both paths; the rows may hold personal data: not shown.
        # A connection lost here is not invalidated; the pool's pre-ping replaces it on checkout.
        raise DBAPIError.instance(sql, None, error, psycopg2.Error,
                                  hide_parameters=True) from error
    finally:
        cursor.close()


def fetch_all(db: Session, sql: str, params: Mapping[str, Any] | Sequence[Any]
              ) -> list[tuple[Any, ...]]:
    """Run one statement in the session's transaction; its rows as plain tuples (maybe none)."""
    with _cursor(db, sql) as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description is not None else []


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a bulk insert")


def _check_defaults_given(table: Table, columns: tuple[str, ...]) -> None:
    # Core would fill in Python-side defaults of missing columns; these paths cannot, so they
    # must be given every such column (a missing one is a bug in the caller, not bad data).
    missing = [column.name for column in table.columns
               if column.name not in columns and column.default is not None]
    if missing:
        raise ValueError(f"bulk insert into {table.name} must give {', '.join(missing)}")


def _check_same_columns(table: Table, rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    keys = rows[0].keys()
    # By name, not count: PostgreSQL would read a key a row lacks as NULL, silently.
    if any(row.keys() != keys for row in rows):
        raise ValueError(f"bulk insert into {table.name}: every row needs the same columns")
    return tuple(keys)


@lru_cache(maxsize=64)
def _insert_sql(table: Table, columns: tuple[str, ...], conflict_columns: tuple[str, ...]) -> str:
    """The statement for rows with these columns; checked and built once per column set."""
    _check_defaults_given(table, columns)
    quoted = ", ".join(f'"{name}"' for name in columns)
    record = ", ".join(f'"{name}" {table.c[name].type.compile(dialect=_DIALECT)}'
                       for name in columns)
    keys = ", ".join(f'"{name}"' for name in conflict_columns)
    # A function scan yields the array's elements in order, so rows go in in the caller's
    # order and concurrent inserts of overlapping keys lock them in the same order (the callers
    # sort their rows for that). `json`, not `jsonb`: the array is read once, without building
    # a binary copy of all of it first (about a tenth of the insert's time, measured).
    return (f"INSERT INTO {table.name} ({quoted}) SELECT {quoted} "
            f"FROM json_to_recordset(%s::json) AS r({record}) "
            f"ON CONFLICT ({keys}) DO NOTHING RETURNING {keys}")


def insert_ignoring_conflicts(db: Session, table: Table, rows: Sequence[Mapping[str, Any]],
                              conflict_columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """INSERT ... ON CONFLICT DO NOTHING of many rows in one statement; the new rows' keys.

    The rows travel as one JSON array that PostgreSQL unpacks (`json_to_recordset`): written
    in C at once (`app.json_codec`, datetimes included) instead of adapting every value in
    Python. Every row must have the same keys, as with Core's multi-row insert.
    """
    sql = _insert_sql(table, _check_same_columns(table, rows), tuple(conflict_columns))
    # Naive datetimes are UTC here, as `_json_value` (the fallback's) treats them.
    payload = json_codec.dumps(rows, default=_json_value, option=orjson.OPT_NAIVE_UTC)
    return fetch_all(db, sql, (payload.decode(),))


# --- COPY: the cheapest way in for rows that are almost always new ---------------------------
#
# PostgreSQL loads rows with COPY for about a third less of its own time than it inserts them
# from a JSON document (json_to_recordset's parsing goes), but COPY knows no ON CONFLICT: a row
# that exists already fails the whole COPY. So it runs under a savepoint, and a clash rolls back
# to it and leaves the rows to the INSERT above. For a redelivered ingest message, the rare case
# where events may exist already, that is two tries instead of one.
#
# The rows travel as CSV written by orjson, one JSON array per row without its brackets: a JSON
# string reads back as the same text in CSV with QUOTE '"' and ESCAPE '\' as long as its only
# escapes are \" and \\. orjson escapes nothing else but control characters, so a row with
# one (an e-mail address or event name never has one; inside a JSON column it is escaped twice
# and harmless) takes the INSERT. Unquoted `null` is NULL; a quoted "null" is the text.

_COPY_TYPES = (String, JSON, DateTime, Integer, BigInteger, Boolean)


@dataclass(frozen=True)
class CopyPayload:
    """Rows encoded for COPY; the `pending` column's values are added when it runs."""

    sql: str
    lines: list[bytes]


@lru_cache(maxsize=64)
def _copy_sql(table: Table, columns: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """The COPY statement for rows with these columns, and which of them hold JSON documents."""
    _check_defaults_given(table, columns)
    types = [table.c[name].type for name in columns]
    unsupported = [name for name, type_ in zip(columns, types, strict=True)
                   if not isinstance(getattr(type_, "impl_instance", type_), _COPY_TYPES)]
    if unsupported:  # a float column, say: orjson writes NaN as null, which would store NULL
        raise ValueError(f"COPY into {table.name} cannot carry {', '.join(unsupported)}")
    quoted = ", ".join(f'"{name}"' for name in columns)
    documents = tuple(index for index, type_ in enumerate(types) if isinstance(type_, JSON))
    return (f"COPY {table.name} ({quoted}) FROM STDIN "
            "WITH (FORMAT csv, QUOTE '\"', ESCAPE '\\', NULL 'null')", documents)


def encode_for_copy(table: Table, rows: Sequence[Mapping[str, Any]], *, pending: str | None = None
                    ) -> CopyPayload | None:
    """The rows as COPY's CSV (see above), or None if one of them cannot go that way.

    `pending` names an integer column the rows do not have yet: its values are given to
    `copy_in`, so the costly part can be done before they are known (see services.ingest).
    """
    given = _check_same_columns(table, rows)
    sql, documents = _copy_sql(table, given + ((pending,) if pending else ()))
    values_of = itemgetter(*given)
    lines = []
    try:
        for row in rows:
            values = list(values_of(row)) if len(given) > 1 else [values_of(row)]
            for index in documents:  # None stays SQL NULL, as in the INSERT
                if values[index] is not None:
                    values[index] = json_codec.dumps(values[index], default=_json_value,
                                                     option=orjson.OPT_NAIVE_UTC).decode()
            lines.append(orjson.dumps(values, option=orjson.OPT_NAIVE_UTC)[1:-1])
    except (orjson.JSONEncodeError, TypeError):  # an integer beyond 64 bits, a lone surrogate
        return None
    # After taking out escaped backslashes, every escape left must be an escaped quote.
    unpaired = b"\n".join(lines).replace(b"\\\\", b"")
    if unpaired.count(b"\\") != unpaired.count(b'\\"'):
        return None
    return CopyPayload(sql, lines)


def copy_in(db: Session, payload: CopyPayload, pending: Sequence[int | None] = ()) -> bool:
    """COPY the rows in, all or nothing; False (and nothing changed) if one clashes.

    `pending` holds the pending column's values, row by row. Runs in the session's transaction
    under a savepoint, so a failure leaves that transaction as it was: the caller then inserts
    the rows the ON CONFLICT way, which also raises what a real fault (a deleted tenant, a value
    too long) raises.
    """
    lines = payload.lines
    if pending:
        lines = [line + (b",null" if value is None else b",%d" % value)
                 for line, value in zip(lines, pending, strict=True)]
    data = b"\n".join(lines) + b"\n"
    # Only the COPY's own failure is a clash; one of the savepoint commands failing is the
    # connection's, raised as SQLAlchemy would raise it (`_cursor`).
    with _cursor(db, payload.sql) as cursor:
        cursor.execute("SAVEPOINT copy_in")
        try:
            cursor.copy_expert(payload.sql, io.BytesIO(data), size=len(data))
        except psycopg2.Error:
            cursor.execute("ROLLBACK TO SAVEPOINT copy_in")
            return False
        finally:
            cursor.execute("RELEASE SAVEPOINT copy_in")
        return True

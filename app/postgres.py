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

from collections.abc import Mapping
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
import psycopg2
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


def fetch_all(db: Session, sql: str, params: Mapping[str, Any] | Sequence[Any]
              ) -> list[tuple[Any, ...]]:
    """Run one statement in the session's transaction; its rows as plain tuples (maybe none)."""
    db.flush()  # what the ORM still holds must be in the database before we read around it
    cursor = db.connection().connection.cursor()
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description is not None else []
    except psycopg2.Error as error:
        # As SQLAlchemy would raise it (IntegrityError, OperationalError, ...), so callers
        # handle failures the same on both paths; the rows may hold personal data: not shown.
        # A connection lost here is not invalidated; the pool's pre-ping replaces it on checkout.
        raise DBAPIError.instance(sql, None, error, psycopg2.Error,
                                  hide_parameters=True) from error
    finally:
        cursor.close()


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a bulk insert")


@lru_cache(maxsize=64)
def _insert_sql(table: Table, columns: tuple[str, ...], conflict_columns: tuple[str, ...]) -> str:
    """The statement for rows with these columns; checked and built once per column set."""
    # Core would fill in Python-side defaults of missing columns; this path cannot, so it must
    # be given every such column (a missing one is a bug in the caller, not bad data).
    missing = [column.name for column in table.columns
               if column.name not in columns and column.default is not None]
    if missing:
        raise ValueError(f"bulk insert into {table.name} must give {', '.join(missing)}")
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
    keys = rows[0].keys()
    sql = _insert_sql(table, tuple(keys), tuple(conflict_columns))
    # By name, not count: PostgreSQL would read a key a row lacks as NULL, silently.
    if any(row.keys() != keys for row in rows):
        raise ValueError(f"bulk insert into {table.name}: every row needs the same columns")
    # Naive datetimes are UTC here, as `_json_value` (the fallback's) treats them.
    payload = json_codec.dumps(rows, default=_json_value, option=orjson.OPT_NAIVE_UTC)
    return fetch_all(db, sql, (payload.decode(),))

"""The database: one engine per process, one scoped session, and the dialect seam.

Everything PostgreSQL-specific that the services need goes through the helpers at the bottom, so
the same service code runs on PostgreSQL and on the embedded SQLite database.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from typing import cast

from sqlalchemy import JSON
from sqlalchemy import Connection
from sqlalchemy import DateTime
from sqlalchemy import Engine
from sqlalchemy import MetaData
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Session
from sqlalchemy.orm import scoped_session
from sqlalchemy.orm import sessionmaker
from sqlalchemy.types import TypeDecorator

from app import postgres
from app.key_cache import KeyCache
from app.timeutil import as_utc

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database returns."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite has no time zones: store naive UTC so text comparison orders correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


JSONDocument = JSON().with_variant(postgresql.JSONB(), "postgresql")

_scoped: scoped_session[Session] = scoped_session(sessionmaker(expire_on_commit=False))
# The current thread's session. scoped_session proxies the whole Session API, so code uses (and
# type-checks) it as a plain Session; only `remove_session` needs the registry itself.
session = cast(Session, _scoped)
_engine: Engine | None = None
_key_cache: KeyCache | None = None


def remove_session() -> None:
    """End the current thread's session (request teardown, end of a task)."""
    _scoped.remove()


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take it over, and
    # begin every transaction IMMEDIATE so concurrent writers queue on the lock instead of failing
    # with "database is locked" when a reader upgrades to a writer.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers that asked for it (`read_only_connection`) take no write lock.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


READ_ONLY = "kraiter_read_only"


@contextmanager
def read_only_connection() -> Iterator[Connection]:
    """A short Core connection for reads only: on SQLite it does not queue on the write lock."""
    with get_engine().connect().execution_options(**{READ_ONLY: True}) as connection:
        yield connection


def make_engine(url: str) -> Engine:
    """Create an engine for `url` with the settings this project relies on."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    options: dict[str, Any] = {}
    if make_url(url).get_driver_name() == "psycopg2":
        # An executemany UPDATE (the ORM flushing many rows, a batch of sends written back)
        # then travels in pages of statements instead of one round trip per row. Its rowcount
        # is no longer exact, and nothing here reads the rowcount of an executemany.
        options["executemany_mode"] = "values_plus_batch"
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **options)


def init_engine(url: str) -> Engine:
    """Create this process's engine (idempotent for the same URL) and bind the session to it."""
    global _engine
    if _engine is not None and _engine.url == make_url(url):
        return _engine
    if _engine is not None:
        _engine.dispose()
    _engine = make_engine(url)
    _scoped.remove()
    _scoped.configure(bind=_engine)
    return _engine


def key_cache() -> KeyCache:
    """This process's API key cache (see app.key_cache), bound to the current engine."""
    global _key_cache
    if _key_cache is None or not _key_cache.serves(get_engine()):
        _key_cache = KeyCache(get_engine())
    return _key_cache


def get_engine() -> Engine:
    """The engine `init_engine` made; fails loudly if the process was not wired."""
    if _engine is None:
        raise RuntimeError("database engine not initialised; call app.db.init_engine() first")
    return _engine


def after_fork() -> None:
    """Drop connections inherited across fork() without closing the parent's sockets."""
    if _engine is not None:
        _engine.dispose(close=False)


@contextmanager
def transaction() -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on error; for tasks and CLI."""
    db = _scoped()
    try:
        yield db
        db.commit()
    except BaseException:
        db.rollback()
        raise
    finally:
        _scoped.remove()


def is_postgres(db: Session) -> bool:
    """Whether the session talks to PostgreSQL (the seam for PostgreSQL-only optimisations)."""
    return db.get_bind().dialect.name == "postgresql"


def insert_ignoring_conflicts(db: Session, table: Any, rows: Sequence[dict[str, Any]],
                              conflict_columns: Sequence[str]) -> list[Any]:
    """Multi-row INSERT ... ON CONFLICT DO NOTHING; return the conflict keys of the new rows.

    On PostgreSQL the rows go as one statement (`app.postgres`); on SQLite, RETURNING makes
    SQLAlchemy send them as multi-row VALUES statements ("insertmanyvalues"). The returned keys
    tell callers which rows were new (not duplicates).
    """
    if not rows:
        return []
    if is_postgres(db):
        result: Iterable[Sequence[Any]] = postgres.insert_ignoring_conflicts(
            db, table, rows, conflict_columns)
    else:
        statement = (sqlite.insert(table)
                     .on_conflict_do_nothing(index_elements=list(conflict_columns))
                     .returning(*(table.c[name] for name in conflict_columns)))
        result = db.execute(statement, list(rows))
    return [row[0] if len(conflict_columns) == 1 else tuple(row) for row in result]


# COPY under a savepoint takes three round trips where the INSERT takes one; what it saves
# PostgreSQL pays for them from a few dozen rows on (a send group's `email.sent` events are
# fewer; an ingest transaction's, many more).
COPY_MIN_ROWS = 50


class NewRows:
    """Rows that are almost always new, encoded for their insert before it runs.

    Encoding is most of an insert's Python (a few ms for 500 events), and the events' insert
    runs under their tenant's feed lock, held until commit (see services.feed): so the rows are
    encoded first and the `pending` column (the feed position), read from the rows only by
    `insert`, is filled in after. On PostgreSQL they go by COPY, and only if one of them exists
    already (a redelivery) the ON CONFLICT way (`app.postgres`).
    """

    def __init__(self, db: Session, table: Any, rows: list[dict[str, Any]], *,
                 key: str, pending: str) -> None:
        self._db, self._table, self._rows, self._key, self._pending = db, table, rows, key, pending
        self._copy = (postgres.encode_for_copy(table, rows, pending=pending)
                      if len(rows) >= COPY_MIN_ROWS and is_postgres(db) else None)

    def insert(self) -> list[Any]:
        """Insert the rows, skipping those whose key exists; the keys of those inserted."""
        if self._copy is not None and postgres.copy_in(
                self._db, self._copy, [row[self._pending] for row in self._rows]):
            return [row[self._key] for row in self._rows]
        return insert_ignoring_conflicts(self._db, self._table, self._rows, [self._key])


def insert_if_absent(db: Session, table: Any, row: dict[str, Any],
                     conflict_columns: Sequence[str]) -> bool:
    """Insert one row unless it clashes on `conflict_columns`; return whether it was inserted."""
    dialect_insert = postgresql.insert if is_postgres(db) else sqlite.insert
    statement = dialect_insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))
    return bool(db.execute(statement, row).rowcount)  # type: ignore[attr-defined]

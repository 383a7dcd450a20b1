"""Listing benchmark: pages of `GET /api/events` on a big events table.

Run `.venv/bin/python bench/list_events.py` (see bench/README.md). It loads synthetic events into
a fresh PostgreSQL database with the real schema (the migrations) and its indexes in place, so the
indexes grow the way production's do, then times `app.services.events.list_events` and the HTTP
endpoint (Flask's test client: the app, no network) over many runs, and prints the plans.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 10.0
# A skewed mix, as real event streams are: most events are page views, a few are rare.
EVENT_MIX = (("page.viewed", 60), ("email.opened", 15), ("signup.completed", 8),
             ("trial.started", 6), ("purchase.completed", 6), ("invoice.paid", 3),
             ("plan.changed", 1), ("purchase.refunded", 1))
CHUNK = 250_000


@dataclass(frozen=True)
class Shape:
    events: int
    tenants: int
    contacts: int
    hot_events: int


def recreate_database(admin_dsn: str, name: str, *, drop_only: bool = False) -> str:
    admin = psycopg2.connect(admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


def _names_sql() -> str:
    """A CASE picking an event name by weight from a uniform `r` in [0, 100)."""
    branches, upper = [], 0
    for name, weight in EVENT_MIX:
        upper += weight
        branches.append(f"WHEN r < {upper} THEN '{name}'")
    return "CASE " + " ".join(branches) + " END"


# Ids look like the app's (prefix + time-ordered text), contact n belongs to tenant n % tenants,
# timestamps spread over the last year at millisecond resolution. The hot contact's events are
# every `step`-th row, so they lie scattered over the heap as a long-lived contact's would.
_EVENTS_SQL = """
INSERT INTO events (id, tenant_id, contact_id, email, name, properties, source, timestamp,
                    created_at)
SELECT 'evt_' || lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0')
              || substr(md5(n::text), 1, 14),
       'ten_' || lpad((c %% %(tenants)s)::text, 6, '0'),
       'cnt_' || lpad(c::text, 8, '0'),
       'user' || c || '@bench' || (c %% 50) || '.test',
       {names},
       jsonb_build_object('plan', 'pro', 'amount', n %% 500),
       'api', ts, ts
FROM (SELECT n, c, date_trunc('milliseconds', now() - random() * interval '365 days') AS ts,
             random() * 100 AS r
      FROM (SELECT n, CASE WHEN n %% %(step)s = 0 AND n / %(step)s < %(hot)s THEN 0
                           ELSE floor(random() * %(contacts)s)::int END AS c
            FROM generate_series(%(start)s, %(stop)s - 1) AS n) picked) drawn
"""


def load(dsn: str, shape: Shape) -> None:
    """Tenants, contacts, then events in chunks with every index in place; then ANALYZE."""
    connection = psycopg2.connect(dsn)
    with connection, connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO tenants (id, name, retention_days, created_at, updated_at)
            SELECT 'ten_' || lpad(t::text, 6, '0'), 'Tenant ' || t, 365, now(), now()
            FROM generate_series(0, %(tenants)s - 1) AS t;
            INSERT INTO contacts (id, tenant_id, email, properties, subscribed, suppressed,
                                  created_at, updated_at)
            SELECT 'cnt_' || lpad(c::text, 8, '0'),
                   'ten_' || lpad((c %% %(tenants)s)::text, 6, '0'),
                   'user' || c || '@bench' || (c %% 50) || '.test', '{}', true, false, now(), now()
            FROM generate_series(0, %(contacts)s - 1) AS c""",
                       {"tenants": shape.tenants, "contacts": shape.contacts})
    total = shape.events + shape.hot_events
    statement = _EVENTS_SQL.replace("{names}", _names_sql())
    values = {"tenants": shape.tenants, "contacts": shape.contacts, "hot": shape.hot_events,
              "step": max(1, total // max(1, shape.hot_events))}
    started = time.monotonic()
    for start in range(0, total, CHUNK):
        stop = min(total, start + CHUNK)
        with connection, connection.cursor() as cursor:
            cursor.execute(statement, {**values, "start": start, "stop": stop})
        rate = stop / (time.monotonic() - started)
        print(f"\r  loaded {stop:,} / {total:,} events ({rate:,.0f}/s)", end="", flush=True)
    print()
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # what autovacuum would have done by now
    connection.close()


@contextmanager
def captured_sql(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """Collect the SQL statements (and parameters) the app sends while the block runs."""
    from sqlalchemy import event

    statements: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", remember)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", remember)


def timed(runs: int, call: Callable[[int], Any]) -> list[float]:
    """Milliseconds for each of `runs` calls (after two unmeasured warm-up calls)."""
    for i in range(2):
        call(i)
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def explain(dsn: str, statement: str, parameters: Any) -> str:
    connection = psycopg2.connect(dsn)
    with connection, connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        plan = "\n".join("    " + row[0] for row in cursor.fetchall())
    connection.close()
    return plan


def measure(dsn: str, shape: Shape, runs: int) -> None:
    from sqlalchemy import select

    from app import create_app
    from app import db
    from app.config import Settings
    from app.models import Contact
    from app.services import events
    from app.services import tenants

    settings = Settings.from_env({**os.environ, "DATABASE_URL": dsn, "SECRET_KEY": "bench",
                                  "EMAIL_TRANSPORT": "memory"})
    app = create_app(settings)
    client = app.test_client()
    rng = random.Random(3)
    hot_tenant, hot_contact = "ten_000000", "cnt_00000000"
    with db.transaction() as session:
        raw_key = tenants.create_key(session, tenant_id=hot_tenant, name="bench").raw_key
        hot_email = session.scalar(select(Contact.email).where(Contact.id == hot_contact))
    headers = {"Authorization": f"Bearer {raw_key}"}
    contacts = [f"cnt_{c:08d}" for c in rng.sample(range(1, shape.contacts), 200)]
    tenant_ids = [f"ten_{t:06d}" for t in rng.sample(range(shape.tenants), min(200, shape.tenants))]

    def page(**kwargs: Any) -> Any:
        try:
            return events.list_events(db.session, limit=20, **kwargs)
        finally:
            db.session.rollback()

    def cursor_at(depth: int, **kwargs: Any) -> str | None:
        cursor = None
        for _ in range(depth):
            cursor = page(cursor=cursor, **kwargs).next_cursor
        return cursor

    deep = min(100, shape.hot_events // 20 - 1)
    hot_cursor = cursor_at(deep, tenant_id=hot_tenant, contact_id=hot_contact)
    feed_cursor = cursor_at(50, tenant_id=hot_tenant)

    def http(query: str) -> Callable[[int], Any]:
        def call(_: int) -> None:
            response = client.get(f"/api/events?{query}", headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)
        return call

    cases: list[tuple[str, Callable[[int], Any]]] = [
        (f"contact page 1 (~{shape.events // max(1, shape.contacts):,} events each)",
         lambda i: page(tenant_id=f"ten_{int(contacts[i % 200][4:]) % shape.tenants:06d}",
                        contact_id=contacts[i % 200])),
        (f"hot contact page 1 ({shape.hot_events:,} events)",
         lambda _: page(tenant_id=hot_tenant, contact_id=hot_contact)),
        (f"hot contact page {deep + 1} via cursor",
         lambda _: page(tenant_id=hot_tenant, contact_id=hot_contact, cursor=hot_cursor)),
        ("tenant feed page 1", lambda i: page(tenant_id=tenant_ids[i % len(tenant_ids)])),
        ("hot tenant feed page 51 via cursor",
         lambda _: page(tenant_id=hot_tenant, cursor=feed_cursor)),
        ("tenant feed, event=page.viewed (60%)",
         lambda i: page(tenant_id=tenant_ids[i % len(tenant_ids)], name="page.viewed")),
        ("tenant feed, event=purchase.refunded (1%)",
         lambda i: page(tenant_id=tenant_ids[i % len(tenant_ids)], name="purchase.refunded")),
        ("HTTP GET ?email=<hot contact>", http(f"email={hot_email}")),
        (f"HTTP GET ?email=<hot contact>&cursor=<page {deep + 1}>",
         http(f"email={hot_email}&cursor={hot_cursor}")),
        ("HTTP GET tenant feed", http("limit=20")),
    ]
    print(f"\nList benchmark: {shape.events + shape.hot_events:,} events, {shape.tenants:,} "
          f"tenants, {shape.contacts:,} contacts; {runs} runs each, limit 20, target < "
          f"{TARGET_MS:.0f} ms\n")
    width = max(len(label) for label, _ in cases)
    print(f"{'query'.ljust(width)}  {'p50 ms':>8}  {'p99 ms':>8}  {'max ms':>8}  target")
    for label, call in cases:
        samples = timed(runs, call)
        p99 = percentile(samples, 0.99)
        print(f"{label.ljust(width)}  {percentile(samples, 0.5):8.2f}  {p99:8.2f}  "
              f"{max(samples):8.2f}  {'ok' if p99 < TARGET_MS else 'MISS'}", flush=True)
    for label, kwargs in (("hot contact, page 1", {}), (f"hot contact, page {deep + 1}",
                                                       {"cursor": hot_cursor})):
        with captured_sql(db.get_engine()) as statements:
            page(tenant_id=hot_tenant, contact_id=hot_contact, **kwargs)
        statement, parameters = statements[-1]
        print(f"\nEXPLAIN (ANALYZE, BUFFERS), {label}:\n{statement}\n{parameters}\n"
              + explain(dsn, statement, parameters))
    db.get_engine().dispose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time GET /api/events pages on a big table.")
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--hot-events", type=int, default=5000,
                        help="extra events of one contact (the deep-pagination case)")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--pg-admin", default=os.environ.get(
        "KRAITER_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--database", default="kraiter_bench_list")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the loaded database of a previous --keep-database run")
    parser.add_argument("--keep-database", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))  # `python bench/list_events.py` puts bench/ on the path
    from app.config import normalise_database_url
    from app.migrate import upgrade

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` drops the database
    shape = Shape(args.events, args.tenants, args.contacts, args.hot_events)
    dsn = args.pg_admin.rsplit("/", 1)[0] + f"/{args.database}"
    try:
        if not args.reuse:
            recreate_database(args.pg_admin, args.database)
            upgrade(normalise_database_url(dsn))
            started = time.monotonic()
            load(dsn, shape)
            print(f"  load + VACUUM ANALYZE took {time.monotonic() - started:,.0f} s")
        measure(dsn, shape, args.runs)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        if not args.keep_database:
            recreate_database(args.pg_admin, args.database, drop_only=True)


if __name__ == "__main__":
    main()

"""E-mail metrics (Analytics guide): lifecycle counts per UTC bucket, and the derived rates.

Counts come straight from the `sends` table: a send counts once per metric, in the bucket of that
lifecycle timestamp (`openedAt` keeps the first open, so an e-mail opened five times is one open).
Grouping is done in SQL, one aggregate per metric in a single UNION ALL; the only dialect seam is
how a timestamp is truncated to its bucket (`date_trunc` on PostgreSQL, `strftime` on SQLite).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy import exists
from sqlalchemy import func
from sqlalchemy import literal_column
from sqlalchemy import select
from sqlalchemy import union_all
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.orm import Session

from app.db import is_postgres
from app.errors import NotFound
from app.models import Send
from app.models import Template
from app.timeutil import isoformat

PERIODS = ("hour", "day", "week", "month")
# The Analytics guide's names for the same periods.
PERIOD_ALIASES = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month"}
DEFAULT_SPAN = {"hour": timedelta(hours=48), "day": timedelta(days=30),
                "week": timedelta(days=30), "month": timedelta(days=30)}
MAX_BUCKETS = 1000
METRICS = ("sent", "delivered", "opened", "clicked", "bounced", "complained", "unsubscribed")
# (name, numerator, denominator), as the Analytics guide defines them.
RATES = (("deliveryRate", "delivered", "sent"), ("openRate", "opened", "delivered"),
         ("clickRate", "clicked", "delivered"), ("clickToOpenRate", "clicked", "opened"),
         ("bounceRate", "bounced", "sent"), ("complaintRate", "complained", "delivered"))
_TIMESTAMPS: dict[str, InstrumentedAttribute[datetime | None]] = {
    "sent": Send.sent_at, "delivered": Send.delivered_at, "opened": Send.opened_at,
    "clicked": Send.clicked_at, "bounced": Send.bounced_at, "complained": Send.complained_at,
    "unsubscribed": Send.unsubscribed_at,
}
_BUCKET_KEY = "%Y-%m-%dT%H:%M:%S"  # how both dialects spell a bucket's start, so keys match
_PG_FORMAT = "'YYYY-MM-DD\"T\"HH24:MI:SS'"
_SQLITE_FORMATS = {"hour": "'%Y-%m-%dT%H:00:00'", "day": "'%Y-%m-%dT00:00:00'",
                   "week": "'%Y-%m-%dT00:00:00'", "month": "'%Y-%m-01T00:00:00'"}


@dataclass(frozen=True)
class Window:
    """Whole UTC buckets: `start` is the first bucket's start, `end` the last one's end."""

    period: str
    start: datetime
    end: datetime

    def buckets(self) -> list[datetime]:
        """Every bucket start in the window, in order."""
        starts, at = [], self.start
        while at < self.end:
            starts.append(at)
            at = next_bucket(at, self.period)
        return starts


def bucket_start(at: datetime, period: str) -> datetime:
    """The start of the UTC bucket holding `at` (weeks start on Monday)."""
    at = at.replace(minute=0, second=0, microsecond=0)
    if period == "hour":
        return at
    at = at.replace(hour=0)
    if period == "week":
        return at - timedelta(days=at.weekday())
    return at.replace(day=1) if period == "month" else at


def next_bucket(start: datetime, period: str) -> datetime:
    """The start of the bucket after the one starting at `start`."""
    if period == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + {"hour": timedelta(hours=1), "day": timedelta(days=1),
                    "week": timedelta(weeks=1)}[period]


def count_buckets(start: datetime, end: datetime, period: str) -> int:
    """How many buckets of `period` the window from `start` to `end` (both aligned) spans."""
    if period == "month":
        return (end.year - start.year) * 12 + end.month - start.month
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
    return (end - start) // step[period]


def make_window(*, period: str, start: datetime, end: datetime) -> Window:
    """The whole buckets from the one holding `start` to the one holding `end`, inclusive."""
    return Window(period, bucket_start(start, period),
                  next_bucket(bucket_start(end, period), period))


def _bucket_expression(db: Session, period: str,
                       column: InstrumentedAttribute[datetime | None]) -> ColumnElement[Any]:
    """`column` truncated to its bucket, as text `YYYY-MM-DDTHH:MM:SS` (the dialect seam).

    Literals, not bound parameters: PostgreSQL accepts the GROUP BY only if it is the very same
    expression as the selected one, and two parameters never are.
    """
    if is_postgres(db):
        # The column is timestamptz: truncate its UTC wall-clock time, whatever the session's zone.
        utc = func.timezone(literal_column("'UTC'"), column)
        truncated = func.date_trunc(literal_column(f"'{period}'"), utc)
        return func.to_char(truncated, literal_column(_PG_FORMAT))
    if period == "week":
        # Back six days, then forward to the next Monday (or stay on it): the week's Monday.
        monday = func.date(column, literal_column("'-6 days'"), literal_column("'weekday 1'"))
        return func.strftime(literal_column(_SQLITE_FORMATS["week"]), monday)
    return func.strftime(literal_column(_SQLITE_FORMATS[period]), column)


def _scope(tenant_id: str, template_id: str | None,
           sequence_id: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Send.tenant_id == tenant_id]
    if template_id is not None:
        conditions.append(Send.template_id == template_id)
    if sequence_id is not None:
        conditions += [Send.source == "sequence", Send.source_id == sequence_id]
    return conditions


def _counts(db: Session, *, window: Window, scope: list[ColumnElement[bool]]
            ) -> dict[tuple[str, str], int]:
    """{(metric, bucket key): sends} for every non-empty bucket, in one statement."""
    parts = []
    for metric, column in _TIMESTAMPS.items():
        bucket = _bucket_expression(db, window.period, column)
        parts.append(
            select(literal_column(f"'{metric}'").label("metric"), bucket.label("bucket"),
                   func.count().label("sends"))
            .where(*scope, column >= window.start, column < window.end)
            .group_by(bucket))
    rows = db.execute(union_all(*parts)).all()
    return {(row.metric, row.bucket): int(row.sends) for row in rows}


def rates(counts: dict[str, int]) -> dict[str, float]:
    """The Analytics guide's rates, as fractions (0 when the denominator is 0)."""
    return {name: round(counts[top] / counts[bottom], 4) if counts[bottom] else 0.0
            for name, top, bottom in RATES}


def _with_rates(counts: dict[str, int]) -> dict[str, Any]:
    return {**counts, **rates(counts)}


def email_metrics(db: Session, *, tenant_id: str, window: Window, template_id: str | None = None,
                  sequence_id: str | None = None) -> dict[str, Any]:
    """`{period, from, to, totals, timeseries}` of the tenant's sends, optionally narrowed."""
    counts = _counts(db, window=window, scope=_scope(tenant_id, template_id, sequence_id))
    timeseries = []
    for start in window.buckets():
        key = start.strftime(_BUCKET_KEY)
        bucket = {metric: counts.get((metric, key), 0) for metric in METRICS}
        timeseries.append({"timestamp": isoformat(start), **_with_rates(bucket)})
    totals = {metric: sum(item[metric] for item in timeseries) for metric in METRICS}
    return {"period": window.period, "from": isoformat(window.start), "to": isoformat(window.end),
            "totals": _with_rates(totals), "timeseries": timeseries}


def require_known_template(db: Session, *, tenant_id: str, template_id: str) -> None:
    """404 unless the template exists, or once existed and still has sends to count."""
    template = select(Template.id).where(Template.tenant_id == tenant_id,
                                         Template.id == template_id)
    sends = select(Send.id).where(Send.tenant_id == tenant_id, Send.template_id == template_id)
    if not db.execute(select(exists(template) | exists(sends))).scalar():
        raise NotFound(f"Template {template_id} not found.")

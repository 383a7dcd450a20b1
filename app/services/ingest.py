"""Ingestion: turn a validated request into queued event messages, and store batches of them.

`accept_event` runs in the web process (cheap: no write); `store_events` runs in the worker and
persists many events with a handful of multi-row statements. Event ids are made at accept time,
so a message delivered twice stores each event once (`ON CONFLICT (id) DO NOTHING`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import json_codec
from app import postgres
from app.db import NewRows
from app.db import insert_ignoring_conflicts
from app.db import is_postgres
from app.errors import NotFound
from app.ids import new_id
from app.models import Contact
from app.models import Event
from app.models import Tenant
from app.services import feed
from app.services import triggers
from app.timeutil import isoformat
from app.timeutil import parse_iso
from app.timeutil import utcnow

EventMessage = dict[str, Any]


def contact_emails(db: Session, *, tenant_id: str, contact_ids: Iterable[str]) -> dict[str, str]:
    """Map each of the tenant's contact ids to its e-mail (unknown ids are left out); one query."""
    wanted = sorted(set(contact_ids))
    if not wanted:
        return {}
    rows = db.execute(select(Contact.id, Contact.email)
                      .where(Contact.tenant_id == tenant_id, Contact.id.in_(wanted)))
    return {row.id: row.email for row in rows}


def accept_event(db: Session, *, tenant_id: str, data: dict[str, Any],
                 known_contacts: Mapping[str, str] | None = None,
                 now: datetime | None = None) -> EventMessage:
    """Resolve who the event is about and stamp it; return the message the worker will store.

    `contactId` wins over `email`; it is looked up in `known_contacts` (from `contact_emails`)
    when given, so a batch resolves all its contacts with one query. `now` (from `utcnow`) is
    the acceptance time; a batch passes one for all its events.
    """
    created, created_ms = _stamp(now or utcnow())
    contact_id = data.get("contactId")
    email = data.get("email")
    if contact_id:
        if known_contacts is None:
            known_contacts = contact_emails(db, tenant_id=tenant_id, contact_ids=[contact_id])
        email = known_contacts.get(contact_id)
        if email is None:
            raise NotFound(f"Contact {contact_id} not found.")
    return {
        "id": new_id("evt", ms=created_ms),
        "tenantId": tenant_id,
        "email": email,
        "contactId": contact_id,
        "event": data["event"],
        "properties": data.get("properties") or {},
        "timestamp": isoformat(data["timestamp"]) if data.get("timestamp") else created,
        "createdAt": created,
    }


@lru_cache(maxsize=1)
def _stamp(moment: datetime) -> tuple[str, int]:
    """The acceptance time as messages carry it, and as ids' time part (ms since the epoch).

    A batch's events share one moment: worked out once, not for each of up to 500 events.
    """
    return isoformat(moment), int(moment.timestamp() * 1000)


# A batch's events were mostly accepted at one moment (and, unless their senders said otherwise,
# happened then): each distinct time is parsed once, not for each of up to 500 events.
_moment = lru_cache(maxsize=64)(parse_iso)


def accepted_view(message: EventMessage) -> dict[str, Any]:
    """The 202 answer for an accepted event: exactly the contract's fields."""
    return {
        "id": message["id"],
        "event": message["event"],
        "email": message["email"],
        "properties": message["properties"],
        "timestamp": message["timestamp"],
        "createdAt": message["createdAt"],
        "status": "queued",
    }


# One probe of the (tenant, e-mail) unique index per address. The plain `email = ANY(%s)` is
# planned from statistics, and with a tenant's contacts new since the last ANALYZE it read all of
# them and compared each with every address (136 ms for 480 addresses against 10,000 contacts,
# against 1.4 ms this way). LIMIT keeps the planner from turning the probes back into a join.
# The addresses go as one JSON array: psycopg2 adapts a Python list item by item (~1.2 µs an
# address, a tenth of storing an event).
_CONTACT_IDS_PG = ("SELECT wanted.email, contact.id "
                   "FROM json_array_elements_text(%s::json) AS wanted(email) "
                   "CROSS JOIN LATERAL (SELECT id FROM contacts WHERE tenant_id = %s "
                   "AND email = wanted.email LIMIT 1) AS contact")


def _contact_ids(db: Session, tenant_id: str, emails: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(emails))
    if is_postgres(db):  # once per ingest message: the lean form (see app.postgres)
        return dict(postgres.fetch_all(db, _CONTACT_IDS_PG,
                                       (json_codec.dumps(wanted).decode(), tenant_id)))
    rows = db.execute(select(Contact.email, Contact.id)
                      .where(Contact.tenant_id == tenant_id, Contact.email.in_(wanted)))
    return {row.email: row.id for row in rows}


def upsert_contacts(db: Session, *, tenant_id: str, emails: Iterable[str]) -> dict[str, str]:
    """Map each e-mail to its contact id, creating contacts that do not exist yet.

    Concurrent callers creating the same contact are safe: the insert skips rows that another
    transaction created (ON CONFLICT DO NOTHING waits for it to commit), and the second read sees
    them. Rows go in sorted order so two batches never lock the same keys in opposite orders.
    """
    wanted = set(emails)
    known = _contact_ids(db, tenant_id, wanted)
    missing = sorted(wanted - known.keys())
    if missing:
        now = utcnow()
        rows = [{"id": new_id("cnt"), "tenant_id": tenant_id, "email": email, "properties": {},
                 "subscribed": True, "suppressed": False, "created_at": now, "updated_at": now}
                for email in missing]
        created = {email for _, email in
                   insert_ignoring_conflicts(db, Contact.__table__, rows, ["tenant_id", "email"])}
        known.update({str(row["email"]): str(row["id"]) for row in rows if row["email"] in created})
        raced = [email for email in missing if email not in created]
        if raced:  # created by a concurrent transaction in the meantime
            known.update(_contact_ids(db, tenant_id, raced))
    return known


# Tenants this process has seen in the database. Tenants are not deleted in normal operation, so
# after warming up a batch costs no tenant query at all; `forget_known_tenants` resets it when
# a batch fails because a tenant vanished after all.
_known_tenants: set[str] = set()


def forget_known_tenants() -> None:
    """Drop the cache of existing tenants (after a batch hit a deleted tenant)."""
    _known_tenants.clear()


def _live_tenants(db: Session, tenant_ids: Iterable[str]) -> set[str]:
    wanted = set(tenant_ids)
    unknown = sorted(wanted - _known_tenants)
    if unknown:
        _known_tenants.update(db.scalars(select(Tenant.id).where(Tenant.id.in_(unknown))))
    return wanted & _known_tenants


def _contact_map(db: Session, messages: list[EventMessage], source: str
                 ) -> dict[tuple[str, str], str]:
    """(tenant, e-mail) → contact id. Tracked events create unknown contacts; system events
    (about a send) never do: a contact deleted since must not come back through an open pixel."""
    creating: dict[str, set[str]] = defaultdict(set)
    existing: dict[str, set[str]] = defaultdict(set)
    vouched: dict[tuple[str, str], str] = {}
    for message in messages:
        if message.get("source", source) != "system":
            creating[message["tenantId"]].add(message["email"])
        elif message.get("contactId"):
            # About a send whose row lock the caller holds, after checking its contact exists:
            # a deletion takes that lock first, so the contact cannot vanish before we commit.
            vouched[(message["tenantId"], message["email"])] = message["contactId"]
        else:
            existing[message["tenantId"]].add(message["email"])
    found = vouched | {(tenant_id, email): contact_id
             for tenant_id, emails in creating.items()
             for email, contact_id in upsert_contacts(db, tenant_id=tenant_id,
                                                      emails=emails).items()}
    for tenant_id, emails in existing.items():
        if lookup := emails - creating[tenant_id]:
            found.update({(tenant_id, email): contact_id
                          for email, contact_id in _contact_ids(db, tenant_id, lookup).items()})
    return found


def _feed_positions(db: Session, messages: list[EventMessage]) -> list[int]:
    """Each message's position in its tenant's live feed, in message order (see services.feed).

    Tenants are allocated in sorted order, so two batches never wait on each other's feeds in
    opposite orders.
    """
    counts: dict[str, int] = defaultdict(int)
    for message in messages:
        counts[message["tenantId"]] += 1
    next_position = {tenant_id: feed.allocate(db, tenant_id=tenant_id, count=counts[tenant_id])
                     for tenant_id in sorted(counts)}
    positions = []
    for message in messages:
        positions.append(next_position[message["tenantId"]])
        next_position[message["tenantId"]] += 1
    return positions


def store_events(db: Session, *, messages: list[EventMessage], source: str = "api"
                 ) -> list[dict[str, Any]]:
    """Persist accepted events (idempotent); return the rows stored just now, in message order.

    Events of a tenant deleted while they were queued are dropped, and so are system events
    whose contact no longer exists.
    """
    live = _live_tenants(db, (message["tenantId"] for message in messages))
    messages = [message for message in messages if message["tenantId"] in live]
    contact_ids = _contact_map(db, messages, source)
    messages = [message for message in messages
                if (message["tenantId"], message["email"]) in contact_ids]
    # What the tenants' sequences listen to is read first, and the rows are encoded for their
    # insert; the feed's lock, held until this transaction ends, is taken last, right before it.
    indexes = triggers.tenant_indexes(db, sorted({m["tenantId"] for m in messages}))
    rows = [
        {
            "id": message["id"],
            "tenant_id": message["tenantId"],
            "contact_id": contact_ids[(message["tenantId"], message["email"])],
            "email": message["email"],
            "name": message["event"],
            "properties": message["properties"],
            "source": message.get("source", source),
            "timestamp": _moment(message["timestamp"]),
            "created_at": _moment(message["createdAt"]),
        }
        for message in messages
    ]
    new_rows = NewRows(db, Event.__table__, sorted(rows, key=lambda r: r["id"]),
                       key="id", pending="feed_seq")
    for row, position in zip(rows, _feed_positions(db, messages), strict=True):
        row["feed_seq"] = position
    inserted = set(new_rows.insert())
    # Only events stored just now: a redelivered batch must not enrol anyone twice.
    stored = [row for row in rows if row["id"] in inserted]
    triggers.on_events_stored(db, rows=stored, indexes=indexes)
    return stored

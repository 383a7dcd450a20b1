"""Stored events meet sequences: enrol on triggers, exit on exit events, resolve waits.

Called by ingestion for every batch of newly inserted events (custom and system). Matching is
in memory against a per-process index of each tenant's sequences (event name → versions), which
is checked against a version stamp (count and latest `updated_at` of the tenant's sequences) with
one small query per batch, so a sequence activated a moment ago already matches and there is no
query per event or per sequence. Database work happens only for events whose name some sequence
cares about: one query for their contacts, one for the enrolments concerned, one insert.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from typing import cast

from sqlalchemy import Table
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from app import postgres
from app.db import is_postgres
from app.models import Contact
from app.models import Enrolment
from app.models import Sequence
from app.models import SequenceVersion
from app.services import enrolments
from app.services import sequences as sequence_service
from app.timeutil import as_utc
from app.timeutil import isoformat
from app.timeutil import utcnow
from sequences import Arrival
from sequences import Definition
from sequences import ExitReason
from sequences import WaitStep
from sequences import event_exits
from sequences import exit_reason
from sequences import may_enrol
from sequences import trigger_matches


@dataclass(frozen=True)
class TenantIndex:
    """What a tenant's sequences listen to, by event name."""

    stamp: tuple[int, Any]
    status: dict[str, str]  # sequence id → status
    current: dict[str, tuple[int, Definition]]  # active sequence id → (version, definition)
    versions: dict[tuple[str, int], Definition]  # every version of active and paused sequences
    triggers: dict[str, list[str]]  # event name → active sequences it may enrol into
    exits: dict[str, set[str]]  # event name → sequences (any live version) it may end
    waits: dict[str, set[str]]  # event name → active sequences with a wait step for it

    @property
    def names(self) -> set[str]:
        """Every event name that matters to this tenant."""
        return set(self.triggers) | set(self.exits) | set(self.waits)


_cache: dict[str, TenantIndex] = {}
_lock = threading.Lock()


def forget() -> None:
    """Drop the cached indexes (tests, or after a failed batch)."""
    with _lock:
        _cache.clear()


_STAMPS_PG = ("SELECT tenant_id, count(*), max(updated_at) FROM sequences"
              " WHERE tenant_id = ANY(%s) GROUP BY tenant_id")


def _stamps(db: Session, tenant_ids: Seq[str]) -> dict[str, tuple[int, Any]]:
    """Each tenant's version stamp: how many sequences, and the latest change (one query)."""
    rows: Iterable[Seq[Any]]
    if is_postgres(db):  # once per ingest message: the lean form (see app.postgres)
        rows = postgres.fetch_all(db, _STAMPS_PG, (list(tenant_ids),))
    else:
        rows = db.execute(select(Sequence.tenant_id, func.count(), func.max(Sequence.updated_at))
                          .where(Sequence.tenant_id.in_(tenant_ids))
                          .group_by(Sequence.tenant_id))
    stamps: dict[str, tuple[int, Any]] = dict.fromkeys(tenant_ids, (0, None))
    for tenant, count, latest in rows:
        stamps[tenant] = (int(count), str(as_utc(latest)))
    return stamps


def _build(db: Session, tenant_id: str, stamp: tuple[int, Any]) -> TenantIndex:
    """Load a tenant's live sequences and index them by the event names they react to."""
    # `.all()`: a Result has `keys()`, so dict() would take it for a mapping.
    status: dict[str, str] = dict(db.execute(
        select(Sequence.id, Sequence.status).where(Sequence.tenant_id == tenant_id)).all())
    live = sorted(seq for seq, state in status.items() if state in ("active", "paused"))
    current_versions: dict[str, int] = dict(db.execute(
        select(Sequence.id, Sequence.version).where(Sequence.tenant_id == tenant_id,
                                                    Sequence.status == "active")).all())
    versions: dict[tuple[str, int], Definition] = {}
    if live:
        for seq, version, canonical in db.execute(
                select(SequenceVersion.sequence_id, SequenceVersion.version,
                       SequenceVersion.canonical)
                .where(SequenceVersion.tenant_id == tenant_id,
                       SequenceVersion.sequence_id.in_(live))):
            versions[(seq, version)] = sequence_service.load_canonical(canonical)
    triggers: dict[str, list[str]] = defaultdict(list)
    exits: dict[str, set[str]] = defaultdict(set)
    waits: dict[str, set[str]] = defaultdict(set)
    current: dict[str, tuple[int, Definition]] = {}
    for seq, version in current_versions.items():
        definition = versions.get((seq, version))
        if definition is None:
            continue
        current[seq] = (version, definition)
        for name in definition.trigger_events:
            triggers[name].append(seq)
    for (seq, _version), definition in versions.items():
        for name in definition.exit_events:
            exits[name].add(seq)
        if status.get(seq) == "active":
            for step in definition.steps:
                if isinstance(step, WaitStep):
                    waits[step.event].add(seq)
    return TenantIndex(stamp, status, current, versions, dict(triggers), dict(exits),
                       dict(waits))


def tenant_indexes(db: Session, tenant_ids: Seq[str]) -> dict[str, TenantIndex]:
    """Each tenant's index, rebuilt only where its stamp moved."""
    stamps = _stamps(db, tenant_ids)
    out: dict[str, TenantIndex] = {}
    for tenant_id, stamp in stamps.items():
        with _lock:
            index = _cache.get(tenant_id)
        if index is None or index.stamp != stamp:
            index = _build(db, tenant_id, stamp)
            with _lock:
                _cache[tenant_id] = index
        out[tenant_id] = index
    return out


def event_item(row: dict[str, Any]) -> dict[str, Any]:
    """A stored event row as the API's event item (what `event.*` paths and Liquid see)."""
    return {"id": row["id"], "event": row["name"], "contactId": row["contact_id"],
            "email": row["email"], "properties": row["properties"],
            "timestamp": isoformat(row["timestamp"]), "createdAt": isoformat(row["created_at"]),
            "source": row["source"]}


def on_events_stored(db: Session, *, rows: list[dict[str, Any]],
                     indexes: dict[str, TenantIndex] | None = None) -> None:
    """Match newly stored events against the tenants' sequences (the ingestion hook).

    `indexes` (from `tenant_indexes`) may be read beforehand, outside the feed's lock.
    """
    if not rows:
        return
    by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_tenant[row["tenant_id"]].append(row)
    if indexes is None or not by_tenant.keys() <= indexes.keys():
        indexes = tenant_indexes(db, sorted(by_tenant))
    for tenant_id, tenant_rows in by_tenant.items():
        index = indexes[tenant_id]
        names = index.names
        relevant = [row for row in tenant_rows if row["name"] in names]
        if relevant:
            _match(db, tenant_id, index, relevant)


def _match(db: Session, tenant_id: str, index: TenantIndex, rows: list[dict[str, Any]]) -> None:
    """Apply one tenant's relevant events in order: exits, then waits, then enrolments."""
    now = utcnow()
    contact_ids = sorted({row["contact_id"] for row in rows})
    people = {contact.id: contact for contact in db.scalars(
        select(Contact).where(Contact.tenant_id == tenant_id, Contact.id.in_(contact_ids)))}
    sequence_ids = sorted({seq for row in rows for seq in (
        *index.triggers.get(row["name"], ()), *index.exits.get(row["name"], ()),
        *index.waits.get(row["name"], ()))})
    # Active enrolments these events may touch, locked in id order; plus, for `never`, who ever
    # enrolled.
    active: dict[tuple[str, str], list[Enrolment]] = defaultdict(list)
    for enrolment in db.scalars(
            select(Enrolment).where(Enrolment.tenant_id == tenant_id,
                                    Enrolment.contact_id.in_(contact_ids),
                                    Enrolment.sequence_id.in_(sequence_ids),
                                    Enrolment.status == "active")
            .order_by(Enrolment.id).with_for_update()
            .execution_options(populate_existing=True)):
        active[(enrolment.sequence_id, enrolment.contact_id)].append(enrolment)
    never = [seq for seq, (_v, d) in index.current.items()
             if d.reenrol == "never" and seq in sequence_ids]
    before: set[tuple[str, str]] = set()
    if never:
        before = set(db.execute(select(Enrolment.sequence_id, Enrolment.contact_id).where(
            Enrolment.tenant_id == tenant_id, Enrolment.contact_id.in_(contact_ids),
            Enrolment.sequence_id.in_(never)).distinct()).tuples())
    created: list[Enrolment] = []
    for row in sorted(rows, key=lambda r: r["timestamp"]):  # stable: ties keep batch order
        contact = people.get(row["contact_id"])
        if contact is None:
            continue
        snapshot = enrolments.contact_snapshot(contact)
        item = event_item(row)
        name = row["name"]
        for seq in sorted(index.exits.get(name, ())):
            for enrolment in list(active[(seq, contact.id)]):
                definition = index.versions.get((seq, enrolment.version))
                if (definition is not None and (enrolment.event or {}).get("id") != row["id"]
                        and event_exits(definition, item, snapshot)):
                    enrolments.finish(enrolment, "exited", now,
                                       reason=str(ExitReason.EXIT_CONDITION))
                    active[(seq, contact.id)].remove(enrolment)
        for seq in sorted(index.waits.get(name, ())):
            for enrolment in list(active[(seq, contact.id)]):
                _resolve_wait(db, index, enrolment, item, row["created_at"], snapshot, now)
                if enrolment.status != "active":
                    active[(seq, contact.id)].remove(enrolment)
        for seq in index.triggers.get(name, ()):
            version, definition = index.current[seq]
            if not trigger_matches(definition, item, snapshot):
                continue
            if not may_enrol(definition, active=bool(active[(seq, contact.id)]),
                             enrolled_before=(seq, contact.id) in before):
                continue
            new = enrolments.new_enrolment(tenant_id=tenant_id, sequence_id=seq,
                                           version=version, contact_id=contact.id,
                                           definition=definition, event=item, now=now)
            enrolments.settle(new, definition=definition, contact=snapshot, now=now)
            placeholder = Enrolment(**new)  # later events of the batch see it (policy, exits)
            created.append(placeholder)
            before.add((seq, contact.id))
            if placeholder.status == "active":
                active[(seq, contact.id)].append(placeholder)
    _insert_enrolments(db, [_row_of(enrolment) for enrolment in created], now)


def _row_of(enrolment: Enrolment) -> dict[str, Any]:
    """The insertable row of an (unsaved) enrolment."""
    return {column.key: getattr(enrolment, column.key) for column in Enrolment.__table__.columns}


def _resolve_wait(db: Session, index: TenantIndex, enrolment: Enrolment, item: dict[str, Any],
                  stored_at: datetime, contact: dict[str, Any], now: datetime) -> None:
    """Let the engine resolve the enrolment's wait step with this event (if it waits for it)."""
    if enrolment not in db:  # enrolled by this very batch: it has not reached its wait yet
        return
    definition = index.versions.get((enrolment.sequence_id, enrolment.version))
    if definition is None or enrolment.current_step >= len(definition.steps):
        return
    step = definition.steps[enrolment.current_step]
    if not isinstance(step, WaitStep) or step.event != item["event"]:
        return
    enrolments.advance(db, enrolment, definition=definition, contact=contact, now=now,
                       arrival=Arrival(item, stored_at))


def _insert_enrolments(db: Session, rows: list[dict[str, Any]], now: datetime) -> None:
    """Insert new enrolments, skipping any a concurrent batch made first; wake them after commit.

    ON CONFLICT DO NOTHING without a target also covers the partial unique index, so two
    batches enrolling the same contact at once leave one enrolment and no error.
    """
    if not rows:
        return
    horizon = enrolments.fast_path()
    for row in rows:
        if row["status"] == "active" and row["next_step_at"] - now <= horizon:
            row["enqueued_at"] = now
    dialect_insert = postgresql.insert if is_postgres(db) else sqlite.insert
    table = cast(Table, Enrolment.__table__)
    statement = dialect_insert(table).on_conflict_do_nothing().returning(table.c.id)
    inserted = set(db.scalars(statement, rows))
    pending = enrolments.wakeups(db).steps
    for row in rows:
        if row["id"] in inserted and row["enqueued_at"] is not None:
            pending.append((row["id"], row["next_step_at"]))


def on_contact_changed(db: Session, *, tenant_id: str, contact_id: str) -> int:
    """End the contact's enrolments that may no longer run, now rather than at their next step.

    After an unsubscribe or a suppression (no sequence e-mail for them: every enrolment exits)
    and after a property change that makes a property exit condition hold ("leave as soon as one
    holds"). Call it once the contact row is updated in the caller's transaction; the enrolments
    are locked in id order, as every other path locks them. Returns how many ended.
    """
    rows = list(db.scalars(
        select(Enrolment).where(Enrolment.tenant_id == tenant_id,
                                Enrolment.contact_id == contact_id, Enrolment.status == "active")
        .order_by(Enrolment.id).with_for_update().execution_options(populate_existing=True)))
    if not rows:
        return 0
    contact = db.scalar(select(Contact).where(Contact.id == contact_id)
                        .execution_options(populate_existing=True))
    if contact is None:
        return 0
    snapshot = enrolments.contact_snapshot(contact)
    index = tenant_indexes(db, [tenant_id])[tenant_id]
    now, ended = utcnow(), 0
    for enrolment in rows:
        definition = index.versions.get((enrolment.sequence_id, enrolment.version))
        if definition is None:
            continue  # its sequence is gone or archived: its next step ends it
        reason = exit_reason(definition, snapshot, enrolment.event)
        if reason is not None:
            enrolments.finish(enrolment, "exited", now, reason=reason.value)
            ended += 1
    return ended

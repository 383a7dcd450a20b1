"""Enrolments: enrol contacts, run their due steps through the engine, list and exit them.

The database is the source of truth: an active enrolment's `(current_step, next_step_at)` is the
position the engine handed out last. Running steps locks the rows, asks `sequences.decide` what
to do, creates sends (one per enrolment and step: checked under the row lock, and guaranteed by
UNIQUE(enrolment_id, step_index)) and stores the new position, so a duplicate or late task finds
nothing due and does nothing. What must happen after the commit (deliver the sends, wake the
enrolment again soon) is noted in `session.info` and published by `tasks.sequences`.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import Any
from typing import cast

from marshmallow import ValidationError
from sqlalchemy import ColumnElement
from sqlalchemy import Select
from sqlalchemy import Table
from sqlalchemy import and_
from sqlalchemy import func
from sqlalchemy import null
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import tuple_
from sqlalchemy import update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from app.db import insert_ignoring_conflicts
from app.db import is_postgres
from app.errors import Conflict
from app.errors import NotFound
from app.errors import Unprocessable
from app.ids import new_id
from app.models import Contact
from app.models import Enrolment
from app.models import Send
from app.models import Sequence
from app.models import SequenceVersion
from app.schemas.common import decode_cursor
from app.services import contacts as contact_service
from app.services import ingest
from app.services import sending
from app.services import sequences as sequence_service
from app.services.pages import Page
from app.services.pages import page_by_id
from app.services.pages import page_from_rows
from app.timeutil import isoformat
from app.timeutil import parse_iso
from app.timeutil import utcnow
from sequences import Arrival
from sequences import Complete
from sequences import Definition
from sequences import EmailStep
from sequences import EnrolmentState
from sequences import Exit
from sequences import Schedule
from sequences import SendEmail
from sequences import Wait
from sequences import decide
from sequences import may_enrol
from sequences import start

STATUSES = ("active", "completed", "exited", "failed")
WAKEUPS_KEY = "kraiter.sequence_wakeups"
DEFAULT_FAST_PATH = timedelta(seconds=300)
EARLY = timedelta(seconds=2)


@dataclass
class Wakeups:
    """Work to publish once the transaction commits: sends to deliver, steps to run soon."""

    sends: list[str] = field(default_factory=list)
    steps: list[tuple[str, datetime]] = field(default_factory=list)


def wakeups(db: Session) -> Wakeups:
    """This transaction's pending wakeups (created on first use)."""
    found = db.info.get(WAKEUPS_KEY)
    if found is None:
        found = db.info[WAKEUPS_KEY] = Wakeups()
    assert isinstance(found, Wakeups)
    return found


def take_wakeups(db: Session) -> Wakeups:
    """Remove and return the pending wakeups (after commit: publish; after rollback: drop)."""
    found = db.info.pop(WAKEUPS_KEY, None)
    return found if isinstance(found, Wakeups) else Wakeups()


def fast_path() -> timedelta:
    """How soon a step must fall due to be handed to Celery with an ETA right away."""
    try:
        from flask import current_app

        return timedelta(seconds=current_app.config["SETTINGS"].sequence_fast_path_s)
    except RuntimeError:  # outside an app context (scripts): the default
        return DEFAULT_FAST_PATH


def contact_snapshot(contact: Contact) -> dict[str, Any]:
    """The mapping the engine evaluates `contact.*` paths against."""
    return {"id": contact.id, "email": contact.email, "properties": contact.properties or {},
            "subscribed": contact.subscribed, "suppressed": contact.suppressed}


def schedule_wakeup(db: Session, enrolment: Enrolment, now: datetime) -> None:
    """If the pending step falls due within the fast-path window, wake it after the commit."""
    due = enrolment.next_step_at
    if enrolment.status == "active" and due is not None and due - now <= fast_path():
        enrolment.enqueued_at = now
        wakeups(db).steps.append((enrolment.id, due))


@dataclass(frozen=True)
class PendingSend:
    """An e-mail step decided for an enrolment, to be created as a send."""

    enrolment: Enrolment
    email: str
    template: str
    step_index: int


def create_sends(db: Session, pending: list[PendingSend]) -> None:
    """Create the decided sends (one per enrolment and step) and deliver them after commit."""
    published = wakeups(db).sends
    for item in pending:
        enrolment = item.enrolment
        send = sending.create_send(
            db, tenant_id=enrolment.tenant_id, contact_id=enrolment.contact_id,
            email=item.email, template_id=item.template,
            context={sending.EVENT_KEY: enrolment.event} if enrolment.event else None,
            source="sequence", source_id=enrolment.sequence_id, enrolment_id=enrolment.id,
            step_index=item.step_index)
        published.append(send.id)


def insert_sends(db: Session, pending: list[PendingSend]) -> None:
    """Create many decided sends with one multi-row INSERT (the batch path of `create_sends`).

    The rows are what `sending.create_send` makes; ON CONFLICT (enrolment_id, step_index) DO
    NOTHING turns a send that already exists into "already sent" instead of an error.
    """
    if not pending:
        return
    now = utcnow()
    ms = int(now.timestamp() * 1000)
    rows: list[dict[str, Any]] = [
            {"id": new_id("snd", ms=ms), "tenant_id": item.enrolment.tenant_id,
             "contact_id": item.enrolment.contact_id, "email": item.email,
             "template_id": item.template, "status": "queued", "source": "sequence",
             "source_id": item.enrolment.sequence_id, "enrolment_id": item.enrolment.id,
             "step_index": item.step_index, "variables": {},
             "context": ({sending.EVENT_KEY: item.enrolment.event}
                         if item.enrolment.event else {}),
             "links": [], "attempts": 0, "created_at": now, "updated_at": now}
            for item in pending]
    created = set(insert_ignoring_conflicts(db, cast(Table, Send.__table__), rows,
                                            ["enrolment_id", "step_index"]))
    wakeups(db).sends.extend(row["id"] for row in rows
                             if (row["enrolment_id"], row["step_index"]) in created)


def advance(db: Session, enrolment: Enrolment, *, definition: Definition,
            contact: Mapping[str, Any], now: datetime, arrival: Arrival | None = None,
            sent_steps: set[int] | None = None,
            deferred: list[PendingSend] | None = None) -> None:
    """Run the enrolment's due steps at `now`; the caller holds its row lock and commits.

    With `deferred`, e-mails are appended there for the caller to `create_sends` in one go
    (every row's position is then flushed in one batch rather than once per send).
    """
    sent = sent_steps if sent_steps is not None else {
        step for step in db.scalars(select(Send.step_index)
                                    .where(Send.enrolment_id == enrolment.id))
        if step is not None}
    pending = deferred if deferred is not None else []
    _advance(db, enrolment, definition, contact, now, arrival, sent, pending)
    if deferred is None:
        create_sends(db, pending)


def _advance(db: Session, enrolment: Enrolment, definition: Definition,
             contact: Mapping[str, Any], now: datetime, arrival: Arrival | None,
             sent: set[int], pending: list[PendingSend]) -> None:
    while True:
        assert enrolment.next_step_at is not None  # active enrolments always have a position
        decision = decide(definition, EnrolmentState(
            enrolment.current_step, enrolment.next_step_at, contact, enrolment.event, arrival),
            now)
        arrival = None  # an event resolves at most the wait it arrived for
        if isinstance(decision, SendEmail):
            if decision.step_index not in sent:
                pending.append(PendingSend(enrolment, str(contact["email"]), decision.template,
                                           decision.step_index))
                sent.add(decision.step_index)
            enrolment.current_step = decision.then.step_index
            enrolment.next_step_at = decision.then.at
            continue
        if isinstance(decision, Schedule | Wait):
            position = decision.position
            enrolment.current_step, enrolment.next_step_at = position.step_index, position.at
            schedule_wakeup(db, enrolment, now)
        elif isinstance(decision, Exit):
            finish(enrolment, "exited", now, reason=str(decision.reason),
                    step=decision.step_index)
        elif isinstance(decision, Complete):
            finish(enrolment, "completed", now, step=len(definition.steps))
        enrolment.updated_at = now
        return


def finish(enrolment: Enrolment, status: str, now: datetime, *, reason: str | None = None,
           step: int | None = None) -> None:
    """End the enrolment (`completed` or `exited`): no pending step remains."""
    enrolment.status, enrolment.exit_reason = status, reason
    enrolment.next_step_at = None
    if step is not None:
        enrolment.current_step = step
    enrolment.updated_at = now


def new_enrolment(*, tenant_id: str, sequence_id: str, version: int, contact_id: str,
                  definition: Definition, event: dict[str, Any] | None,
                  now: datetime) -> dict[str, Any]:
    """A new enrolment's row, at the position the engine starts it at."""
    position = start(definition, now)
    return {"id": new_id("enr", ms=int(now.timestamp() * 1000)), "tenant_id": tenant_id,
            "sequence_id": sequence_id, "version": version, "contact_id": contact_id,
            "status": "active", "exclusive": definition.reenrol != "always",
            "current_step": position.step_index, "next_step_at": position.at,
            "exit_reason": None, "event": event, "enqueued_at": None, "created_at": now,
            "updated_at": now}


def settle(row: dict[str, Any], *, definition: Definition, contact: Mapping[str, Any],
           now: datetime) -> None:
    """Run a new enrolment's pure first steps in place (a leading delay needs no task at all).

    Only an e-mail is left for `run_steps`, which sends it; the row keeps the start position.
    """
    decision = decide(definition, EnrolmentState(row["current_step"], row["next_step_at"],
                                                 contact, row["event"]), now)
    if isinstance(decision, Schedule | Wait):
        row["current_step"], row["next_step_at"] = decision.position.step_index, \
            decision.position.at
    elif isinstance(decision, Exit):
        row.update(status="exited", exit_reason=str(decision.reason), next_step_at=None,
                   current_step=decision.step_index)
    elif isinstance(decision, Complete):
        row.update(status="completed", next_step_at=None, current_step=len(definition.steps))


# --- running due steps -----------------------------------------------------------------------


def run_steps(db: Session, *, enrolment_ids: Iterable[str], now: datetime | None = None) -> int:
    """Run whatever is due for these enrolments; return how many advanced. Idempotent.

    Rows are locked in id order (two runners never deadlock); a sequence that is paused holds
    its enrolments, one that is gone ends them; the contact is re-read, so an unsubscribed or
    suppressed contact exits before any e-mail.
    """
    now = now or utcnow()
    ids = sorted(set(enrolment_ids))
    if not ids:
        return 0
    rows = list(db.scalars(
        select(Enrolment).where(Enrolment.id.in_(ids), Enrolment.status == "active")
        .order_by(Enrolment.id).with_for_update()
        .execution_options(populate_existing=True)))
    due = [row for row in rows if row.next_step_at is not None and row.next_step_at <= now]
    for row in rows:
        # A task that ran a moment early (clocks differ): wake the step again. A stale task
        # (the step it was for has run) does nothing: the step's own task or the sweeper holds
        # the next one, and re-enqueueing here would keep duplicates alive forever.
        if row.next_step_at is not None and now < row.next_step_at <= now + EARLY:
            schedule_wakeup(db, row, now)
    if not due:
        return 0
    pairs = {(row.tenant_id, row.sequence_id) for row in due}
    statuses = {(tenant, seq): status for tenant, seq, status in db.execute(
        select(Sequence.tenant_id, Sequence.id, Sequence.status)
        .where(tuple_(Sequence.tenant_id, Sequence.id).in_(sorted(pairs))))}
    keys = sorted({(row.tenant_id, row.sequence_id, row.version) for row in due})
    definitions = {(tenant, seq, version): sequence_service.load_canonical(canonical)
                   for tenant, seq, version, canonical in db.execute(
                       select(SequenceVersion.tenant_id, SequenceVersion.sequence_id,
                              SequenceVersion.version, SequenceVersion.canonical)
                       .where(tuple_(SequenceVersion.tenant_id, SequenceVersion.sequence_id,
                                     SequenceVersion.version).in_(keys)))}
    people = {contact.id: contact for contact in db.scalars(
        select(Contact).where(Contact.id.in_(sorted({row.contact_id for row in due})))
        .execution_options(populate_existing=True))}
    sent: dict[str, set[int]] = {row.id: set() for row in due}
    for enrolment_id, step_index in db.execute(
            select(Send.enrolment_id, Send.step_index)
            .where(Send.enrolment_id.in_([row.id for row in due]))):
        if enrolment_id is not None and step_index is not None:
            sent[enrolment_id].add(step_index)
    advanced = 0
    deferred: list[PendingSend] = []
    for row in due:
        status = statuses.get((row.tenant_id, row.sequence_id))
        if status == "paused" or status == "draft":
            continue  # held; the sweeper skips paused sequences, resume clears the bookmark
        definition = definitions.get((row.tenant_id, row.sequence_id, row.version))
        contact = people.get(row.contact_id)
        if status is None or definition is None:
            finish(row, "exited", now, reason="sequenceDeleted")
        elif status == "archived":
            finish(row, "exited", now, reason="sequenceArchived")
        elif contact is None or contact.tenant_id != row.tenant_id:
            finish(row, "exited", now, reason="contactDeleted")
        else:
            advance(db, row, definition=definition, contact=contact_snapshot(contact), now=now,
                    sent_steps=sent[row.id], deferred=deferred)
        advanced += 1
    insert_sends(db, deferred)
    db.flush()
    return advanced


def _in_active_sequence() -> ColumnElement[bool]:
    """The enrolment's sequence is active (a paused one holds its steps on purpose)."""
    return select(Sequence.id).where(Sequence.tenant_id == Enrolment.tenant_id,
                                     Sequence.id == Enrolment.sequence_id,
                                     Sequence.status == "active").exists()


def step_backlog_query(now: datetime) -> Select[int, datetime | None]:
    """How many steps are due and not run yet, and when the oldest fell due (for monitoring).

    The partial index on active enrolments' `next_step_at` keeps this a short range scan.
    """
    return (select(func.count(), func.min(Enrolment.next_step_at))
            .where(Enrolment.status == "active", Enrolment.next_step_at <= now)
            .where(_in_active_sequence()))


def claim_due(db: Session, *, now: datetime, lookahead: timedelta, requeue_after: timedelta,
              limit: int) -> list[tuple[str, datetime]]:
    """Claim active steps due within `lookahead` that no task is known to hold; mark them.

    A step counts as held while its task is recent (`enqueued_at`) or it has not been overdue
    for `requeue_after` yet (an ETA task holds it until it runs). Paused sequences are skipped.
    On PostgreSQL the rows are locked with SKIP LOCKED, so concurrent sweepers claim disjoint
    rows; SQLite's write transaction (BEGIN IMMEDIATE) already excludes other sweepers.
    """
    stale = now - requeue_after
    query = (select(Enrolment.id, Enrolment.next_step_at)
             .where(Enrolment.status == "active", Enrolment.next_step_at <= now + lookahead,
                    or_(Enrolment.enqueued_at.is_(None),
                        and_(Enrolment.enqueued_at < stale, Enrolment.next_step_at < stale)))
             .where(_in_active_sequence())
             .order_by(Enrolment.next_step_at).limit(limit))
    if is_postgres(db):
        query = query.with_for_update(skip_locked=True, of=Enrolment)
    rows = [(row.id, row.next_step_at) for row in db.execute(query)]
    if rows:
        db.execute(update(Enrolment).where(Enrolment.id.in_([row[0] for row in rows]))
                   .values(enqueued_at=now))
    return rows


# --- enrolling and exiting through the API ----------------------------------------------------


def _contact_for(db: Session, *, tenant_id: str, email: str | None,
                 contact_id: str | None) -> Contact:
    if contact_id:
        return contact_service.find_contact(db, tenant_id=tenant_id, ref=contact_id)
    assert email is not None
    found_id = ingest.upsert_contacts(db, tenant_id=tenant_id, emails=[email])[email]
    contact = db.get(Contact, found_id, populate_existing=True)
    assert contact is not None  # just upserted, in this transaction
    return contact


def enrol(db: Session, *, tenant_id: str, sequence_id: str, email: str | None = None,
          contact_id: str | None = None) -> Enrolment:
    """Enrol a contact by hand (the only way into `api: true` sequences) and run step 0.

    Unprocessable unless the sequence is active; Conflict when its `reenrol` policy refuses.
    """
    sequence = sequence_service.get_sequence(db, tenant_id=tenant_id, sequence_id=sequence_id,
                                             lock=True)
    if sequence.status != "active":
        raise Unprocessable(f"Sequence {sequence_id} is {sequence.status}; only active "
                            "sequences enrol contacts.",
                            details={"status": [f"Sequence is {sequence.status}."]})
    contact = _contact_for(db, tenant_id=tenant_id, email=email, contact_id=contact_id)
    definition = sequence_service.load_canonical(
        sequence_service.current_version(db, sequence).canonical)
    refused = Conflict(f"Contact {contact.email} may not enrol in {sequence_id} again "
                       f"(reenrol: {definition.reenrol}).")
    statuses = list(db.scalars(select(Enrolment.status).where(
        Enrolment.tenant_id == tenant_id, Enrolment.sequence_id == sequence_id,
        Enrolment.contact_id == contact.id)))
    if not may_enrol(definition, active="active" in statuses, enrolled_before=bool(statuses)):
        raise refused
    now = utcnow()
    row = new_enrolment(tenant_id=tenant_id, sequence_id=sequence_id, version=sequence.version,
                        contact_id=contact.id, definition=definition, event=None, now=now)
    if not _insert_enrolment(db, row):
        # An enrolment made since the check above (an event's trigger, on the worker) holds the
        # one active place: answer as the check would have, not with the unique-index error.
        raise refused
    enrolment = db.get(Enrolment, row["id"], populate_existing=True)
    assert enrolment is not None  # just inserted, in this transaction
    advance(db, enrolment, definition=definition, contact=contact_snapshot(contact), now=now,
            sent_steps=set())
    db.flush()
    return enrolment


def _insert_enrolment(db: Session, row: dict[str, Any]) -> bool:
    """Insert one enrolment unless a unique index refuses it; return whether it was inserted.

    ON CONFLICT DO NOTHING without a target also covers the partial index that allows one
    active exclusive enrolment per contact and sequence; on PostgreSQL it waits for a
    concurrent insert of the same place to commit or roll back, instead of failing.
    """
    dialect_insert = postgresql.insert if is_postgres(db) else sqlite.insert
    table = cast(Table, Enrolment.__table__)
    statement = dialect_insert(table).on_conflict_do_nothing().returning(table.c.id)
    return db.scalar(statement, row) is not None


def get_enrolment(db: Session, *, tenant_id: str, sequence_id: str,
                  enrolment_id: str) -> Enrolment:
    """One enrolment of the sequence, or NotFound."""
    enrolment = db.scalar(select(Enrolment).where(
        Enrolment.tenant_id == tenant_id, Enrolment.sequence_id == sequence_id,
        Enrolment.id == enrolment_id).with_for_update()
        .execution_options(populate_existing=True))
    if enrolment is None:
        raise NotFound(f"Enrolment {enrolment_id} not found.")
    return enrolment


def exit_enrolment(db: Session, *, tenant_id: str, sequence_id: str,
                   enrolment_id: str) -> Enrolment:
    """End an enrolment by hand (its pending step never runs); a finished one is unchanged."""
    enrolment = get_enrolment(db, tenant_id=tenant_id, sequence_id=sequence_id,
                              enrolment_id=enrolment_id)
    if enrolment.status == "active":
        finish(enrolment, "exited", utcnow(), reason="manual")
        db.flush()
    return enrolment


def erase_contact_enrolments(db: Session, *, tenant_id: str, contact_id: str,
                             reason: str = "contactDeleted") -> int:
    """End a contact's active enrolments and forget their enrolling events; return how many ended.

    For contact deletion. Every active enrolment (running, waiting for an event or a delay, or
    held by a paused sequence) exits with `reason` and no `next_step_at`, so neither the sweeper
    nor a task already queued for its step finds anything due. The rows stay for the sequence's
    statistics; the enrolling event they keep (its e-mail and properties) is cleared from all of
    them, finished ones included. A step being run right now holds the row lock: this waits for
    it, and the caller then cancels the send it queued.
    """
    now = utcnow()
    mine = (Enrolment.tenant_id == tenant_id, Enrolment.contact_id == contact_id)
    result = db.execute(update(Enrolment).where(*mine, Enrolment.status == "active").values(
        status="exited", exit_reason=reason, next_step_at=None, enqueued_at=None, event=null(),
        updated_at=now))
    db.execute(update(Enrolment).where(*mine, Enrolment.event.is_not(None)).values(event=null()))
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- reading ----------------------------------------------------------------------------------


def list_enrolments(db: Session, *, tenant_id: str, sequence_id: str | None = None,
                    contact_id: str | None = None, status: str | None = None, limit: int,
                    cursor: str | None = None) -> Page[Enrolment]:
    """A page of enrolments, newest first (ids sort by creation time)."""
    query = select(Enrolment).where(Enrolment.tenant_id == tenant_id)
    if sequence_id is not None:
        query = query.where(Enrolment.sequence_id == sequence_id)
    if contact_id is not None:
        query = query.where(Enrolment.contact_id == contact_id)
    if status is not None:
        query = query.where(Enrolment.status == status)
    return page_by_id(db, query, Enrolment.id, limit=limit, cursor=cursor, newest_first=True)


def list_scheduled(db: Session, *, tenant_id: str, limit: int, cursor: str | None = None,
                   sequence_id: str | None = None) -> Page[dict[str, Any]]:
    """Pending steps of active enrolments, earliest first, as `/api/scheduled` items."""
    query = (select(Enrolment, Contact.email)
             .join(Contact, Contact.id == Enrolment.contact_id, isouter=True)
             .where(Enrolment.tenant_id == tenant_id, Enrolment.status == "active",
                    Enrolment.next_step_at.is_not(None)))
    if sequence_id is not None:
        query = query.where(Enrolment.sequence_id == sequence_id)
    if cursor:
        values = decode_cursor(cursor, required_keys=("t", "i"))
        try:
            at = parse_iso(values["t"])
        except ValueError:
            raise ValidationError({"cursor": ["Not a valid cursor."]}) from None
        query = query.where(or_(Enrolment.next_step_at > at,
                                and_(Enrolment.next_step_at == at, Enrolment.id > values["i"])))
    rows = db.execute(query.order_by(Enrolment.next_step_at, Enrolment.id)
                      .limit(limit + 1)).all()
    items = [_scheduled_view(db, row.Enrolment, row.email) for row in rows]
    return page_from_rows(items, limit=limit,
                          cursor_of=lambda item: {"t": item["scheduledFor"],
                                                  "i": item["enrolmentId"]})


def _scheduled_view(db: Session, enrolment: Enrolment, email: str | None) -> dict[str, Any]:
    definition = sequence_service.version_definition(
        db, tenant_id=enrolment.tenant_id, sequence_id=enrolment.sequence_id,
        version=enrolment.version)
    steps = definition.steps if definition is not None else ()
    step = steps[enrolment.current_step] if enrolment.current_step < len(steps) else None
    item: dict[str, Any] = {
        "id": f"sch_{enrolment.id.removeprefix('enr_')}_{enrolment.current_step}",
        "enrolmentId": enrolment.id, "contactId": enrolment.contact_id, "email": email,
        "sequenceId": enrolment.sequence_id, "step": enrolment.current_step,
        "action": step.action if step is not None else "complete",
    }
    if isinstance(step, EmailStep):
        item["templateId"] = step.template
    item["scheduledFor"] = isoformat(enrolment.next_step_at)
    return item


def enrolment_view(enrolment: Enrolment) -> dict[str, Any]:
    """The API's enrolment object."""
    return {
        "id": enrolment.id,
        "sequenceId": enrolment.sequence_id,
        "contactId": enrolment.contact_id,
        "status": enrolment.status,
        "currentStep": enrolment.current_step,
        "nextStepAt": isoformat(enrolment.next_step_at),
        "exitReason": enrolment.exit_reason,
        "createdAt": isoformat(enrolment.created_at),
        "updatedAt": isoformat(enrolment.updated_at),
    }


def counts_by_status(db: Session, *, tenant_id: str, sequence_ids: Iterable[str]
                     ) -> dict[str, dict[str, int]]:
    """{sequence id: {status: enrolments}} for the given sequences, every status present."""
    wanted = sorted(set(sequence_ids))
    counts = {sequence_id: dict.fromkeys(STATUSES, 0) for sequence_id in wanted}
    if not wanted:
        return counts
    rows = db.execute(select(Enrolment.sequence_id, Enrolment.status, func.count())
                      .where(Enrolment.tenant_id == tenant_id,
                             Enrolment.sequence_id.in_(wanted))
                      .group_by(Enrolment.sequence_id, Enrolment.status)).all()
    for sequence_id, status, count in rows:
        counts[sequence_id][status] = int(count)
    return counts

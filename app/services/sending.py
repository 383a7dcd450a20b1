"""Sends: queue one, deliver it at most once, list them.

Delivery runs in steps, each its own short transaction (tasks/sends.py drives them): read the
queued sends and render their messages (`prepare_sends`, no writes); claim a small group of them
with one conditional UPDATE each, `queued` → `sending`, committed before the transport is called
(`claim_sends`); transmit; record the outcomes through the lifecycle (`record_outcomes`). Only
the claimer transmits, so a task delivered twice finds nothing to claim. A worker that dies
while its group is out leaves those rows in `sending`: nobody knows whether the server took
their messages, so they are never sent again, and a sweep marks them `failed` after a while.
Only failures that certainly sent nothing (`TransientError`) put a row back to `queued`, for a
retry with backoff.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from typing import Any
from typing import cast
from urllib.parse import unquote_plus

from sqlalchemy import Boolean
from sqlalchemy import Table
from sqlalchemy import and_
from sqlalchemy import bindparam
from sqlalchemy import exists
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import NotFound
from app.errors import Unprocessable
from app.ids import new_id
from app.models import Contact
from app.models import Send
from app.models import Template
from app.models import Tenant
from app.services import ingest
from app.services import lifecycle
from app.services import rendering
from app.services import tracking
from app.services.pages import Page
from app.services.pages import page_by_id
from app.timeutil import isoformat
from app.timeutil import utcnow
from app.transports import FatalError
from app.transports import PermanentError
from app.transports import TransientError
from app.transports import Transport
from app.transports import TransportError
from app.transports.message import SEND_ID_HEADER
from app.transports.message import OutgoingMessage
from app.transports.message import build_message
from app.transports.message import new_message_id

log = logging.getLogger(__name__)

# What the API shows; `sending` (claimed, the transport may be running) is shown as `queued`.
API_STATUSES = ("queued", "sent", "delivered", "bounced", "complained", "rejected", "failed")
# `Send.context` keys: the enrolling event (Liquid `event`) and the transactional override.
EVENT_KEY = "event"
IGNORE_UNSUBSCRIBE_KEY = "ignoreUnsubscribe"
INTERRUPTED = "interrupted while sending; not retried, to avoid sending a duplicate"
# A deleted contact's sends keep no address (the column is required, so it is emptied).
ERASED_EMAIL = ""
CANCELLED_BY_DELETION = "Cancelled: the contact was deleted."
DELETED_WHILE_SENDING = "The contact was deleted while this e-mail was being sent."
REDACTED = "[deleted]"
MAX_RETRY_DELAY_S = 3600.0


def create_send(db: Session, *, tenant_id: str, contact_id: str, email: str, template_id: str,
                variables: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
                source: str = "transactional", source_id: str | None = None,
                enrolment_id: str | None = None, step_index: int | None = None) -> Send:
    """Add a `queued` send; the caller commits, then enqueues `sends.deliver` with its id."""
    now = utcnow()
    send = Send(id=new_id("snd", ms=int(now.timestamp() * 1000)), tenant_id=tenant_id,
                contact_id=contact_id, email=email, template_id=template_id, status="queued",
                source=source, source_id=source_id, enrolment_id=enrolment_id,
                step_index=step_index, variables=variables or {}, context=context or {},
                links=[], attempts=0, created_at=now, updated_at=now)
    db.add(send)
    db.flush()
    return send


def send_transactional(db: Session, *, tenant_id: str, to: str, template_id: str,
                       variables: dict[str, Any], ignore_unsubscribe: bool) -> Send:
    """Queue one e-mail to `to` (the contact is created if new); NotFound or Unprocessable."""
    if db.get(Template, (tenant_id, template_id)) is None:
        raise NotFound(f"Template {template_id} not found.")
    contact_id = ingest.upsert_contacts(db, tenant_id=tenant_id, emails=[to])[to]
    contact = db.get(Contact, contact_id, populate_existing=True)
    assert contact is not None  # just upserted, in this transaction
    if contact.suppressed:
        raise Unprocessable(f"Contact {to} is suppressed (after a hard bounce or a complaint).",
                            details={"to": ["Suppressed contact."]})
    if not contact.subscribed and not ignore_unsubscribe:
        raise Unprocessable(f"Contact {to} has unsubscribed; set ignoreUnsubscribe for mail "
                            "the recipient must get anyway.", details={"to": ["Unsubscribed."]})
    return create_send(db, tenant_id=tenant_id, contact_id=contact_id, email=to,
                       template_id=template_id, variables=variables,
                       context={IGNORE_UNSUBSCRIBE_KEY: True} if ignore_unsubscribe else {})


# --- delivery ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """A queued send, read and rendered but not claimed: its message, or why there is none."""

    send_id: str
    message: OutgoingMessage | None = None
    subject: str | None = None
    links: list[str] = field(default_factory=list)
    message_id: str | None = None
    template_version: int | None = None
    ignore_unsubscribe: bool = False
    refusal: str | None = None  # the contact must not get it: the send becomes `rejected`
    failure: str | None = None  # it cannot be built: the send becomes `failed`


@dataclass(frozen=True)
class Outcome:
    """What the transport said: the provider's id, or the error."""

    provider_message_id: str | None = None
    error: TransportError | None = None


_sends = cast(Table, Send.__table__)
_contacts = cast(Table, Contact.__table__)
_templates = cast(Table, Template.__table__)
_tenants = cast(Table, Tenant.__table__)
# The hot path runs prebuilt Core statements with bound parameters and no ORM objects: SQLAlchemy
# then reuses their compiled form and cache key, which keeps its overhead a small part of a send.
_DRAFTS = (
    select(_sends.c.id, _sends.c.status, _sends.c.email, _sends.c.template_id,
           _sends.c.variables, _sends.c.context, _sends.c.message_id,
           _contacts.c.id.label("contact_id"), _contacts.c.email.label("contact_email"),
           _contacts.c.properties, _contacts.c.suppressed, _contacts.c.subscribed,
           _templates.c.subject, _templates.c.html, _templates.c.mjml, _templates.c.text,
           _templates.c.version, _tenants.c.email_from)
    .select_from(_sends.join(_tenants, _tenants.c.id == _sends.c.tenant_id)
                 .outerjoin(_contacts, and_(_contacts.c.tenant_id == _sends.c.tenant_id,
                                            _contacts.c.id == _sends.c.contact_id))
                 .outerjoin(_templates, and_(_templates.c.tenant_id == _sends.c.tenant_id,
                                             _templates.c.id == _sends.c.template_id)))
    .where(_sends.c.id.in_(bindparam("b_ids", expanding=True))))
_QUEUED = update(_sends).where(_sends.c.id == bindparam("b_id"), _sends.c.status == "queued")
_GIVE_UP = _QUEUED.values(status=bindparam("b_status"), error=bindparam("b_error"),
                          updated_at=bindparam("b_now"))
_CLAIM = _QUEUED.where(exists().where(
    _contacts.c.tenant_id == _sends.c.tenant_id, _contacts.c.id == _sends.c.contact_id,
    _contacts.c.suppressed.is_(False),
    or_(_contacts.c.subscribed.is_(True), bindparam("b_ignore", type_=Boolean)),
)).values(status="sending", claimed_at=bindparam("b_now"), attempts=_sends.c.attempts + 1,
          subject=bindparam("b_subject"), links=bindparam("b_links", type_=_sends.c.links.type),
          message_id=bindparam("b_message_id"), template_version=bindparam("b_version"),
          updated_at=bindparam("b_now"))
# The row as the lifecycle functions see it, and the statement that writes it back whole (one
# compiled statement whatever they changed). The JSON documents, which they never touch, are left
# out: decoding them is most of the cost of reading a row.
_LIFECYCLE_COLUMNS = [column for column in _sends.c
                      if column.name not in {"id", "variables", "context", "links"}]
# Whether the send's contact still exists, read in the same statement. A contact deleted while
# this waited for the row lock shows in the row itself: the deletion erased its address.
_CONTACT_LIVE = exists().where(_contacts.c.tenant_id == _sends.c.tenant_id,
                               _contacts.c.id == _sends.c.contact_id).label("contact_live")
_LOCK = select(_sends.c.id, *_LIFECYCLE_COLUMNS, _CONTACT_LIVE).where(
    _sends.c.id.in_(bindparam("b_ids", expanding=True))).order_by(_sends.c.id).with_for_update(
    of=_sends)
_WRITE_BACK = update(_sends).where(_sends.c.id == bindparam("b_id")).values(
    {column.name: bindparam(f"w_{column.name}", type_=column.type)
     for column in _LIFECYCLE_COLUMNS})


def _refusal(row: Any, ignore_unsubscribe: bool) -> str | None:
    """Why the contact must not get this e-mail (checked again when it is claimed), or None."""
    if row.contact_id is None:
        return "The contact no longer exists."
    if row.suppressed:
        return "The contact is suppressed (after a hard bounce or a complaint)."
    if not row.subscribed and not ignore_unsubscribe:
        return "The contact has unsubscribed."
    return None


def prepare_sends(db: Session, *, send_ids: list[str], settings: Settings) -> list[Draft]:
    """Read the queued sends among `send_ids` and render their messages (no writes), in order.

    Rendering happens before the claim, outside any write transaction, so a slow template never
    holds a lock; a task delivered twice renders twice, and only one of them claims.
    """
    rows = {row.id: row for row in db.execute(_DRAFTS, {"b_ids": list(send_ids)})}
    return [_draft(rows[send_id], settings) for send_id in dict.fromkeys(send_ids)
            if send_id in rows and rows[send_id].status == "queued"]


def _draft(row: Any, settings: Settings) -> Draft:
    ignore = bool((row.context or {}).get(IGNORE_UNSUBSCRIBE_KEY))
    refusal = _refusal(row, ignore)
    if refusal is not None:
        return Draft(row.id, refusal=refusal)
    if row.version is None:
        return Draft(row.id, failure=f"Template {row.template_id} no longer exists.")
    try:
        return _compose(row, row.email_from or settings.email_from, settings, ignore)
    except rendering.RenderError as error:
        return Draft(row.id, failure=f"Template error: {error.message}")
    except ValueError as error:  # an unusable sender or recipient address
        return Draft(row.id, failure=str(error))


def _compose(row: Any, sender: str, settings: Settings, ignore_unsubscribe: bool) -> Draft:
    """Render the template for this send and build its message."""
    unsubscribe = tracking.unsubscribe_url(settings.public_url, settings.secret_keys, row.id)
    context = rendering.build_context(
        contact={"id": row.contact_id, "email": row.contact_email,
                 "properties": row.properties or {}},
        variables=row.variables or {}, event=(row.context or {}).get(EVENT_KEY),
        unsubscribe_url=unsubscribe)
    rendered = rendering.render_email(subject=row.subject, html=row.html, mjml=row.mjml,
                                      text=row.text, context=context)
    html, links = tracking.instrument_html(rendered.html, public_url=settings.public_url,
                                           secret_keys=settings.secret_keys, send_id=row.id)
    # A retry keeps the first Message-ID, so a server that did see an earlier try can tell.
    message_id = row.message_id or new_message_id(sender)
    message = build_message(sender=sender, to=row.email, subject=rendered.subject,
                            text=rendered.text, html=html, message_id=message_id, headers={
                                SEND_ID_HEADER: row.id,
                                "List-Unsubscribe": f"<{unsubscribe}>",
                                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    return Draft(row.id, message=message, subject=rendered.subject, links=links,
                 message_id=message_id, template_version=row.version,
                 ignore_unsubscribe=ignore_unsubscribe)


def claim_sends(db: Session, *, drafts: Sequence[Draft]) -> dict[str, OutgoingMessage]:
    """Claim each send (`queued` → `sending`) and store what its message holds; return the
    messages of those claimed by send id, in order.

    One conditional UPDATE per send, which also checks the contact again: if it was suppressed
    or unsubscribed since the draft was read, nothing is claimed (the lost-send sweep retries
    it, and then the draft says why not). The caller must commit before transmitting: the
    committed claim is what stops a second worker. A refused or failed draft is recorded as such
    instead.
    """
    now = utcnow()
    claimed: dict[str, OutgoingMessage] = {}
    for draft in drafts:
        if draft.message is None:
            db.execute(_GIVE_UP, {"b_id": draft.send_id, "b_now": now,
                                  "b_status": "rejected" if draft.refusal else "failed",
                                  "b_error": draft.refusal or draft.failure})
            continue
        result = db.execute(_CLAIM, {
            "b_id": draft.send_id, "b_now": now, "b_ignore": draft.ignore_unsubscribe,
            "b_subject": draft.subject, "b_links": draft.links,
            "b_message_id": draft.message_id, "b_version": draft.template_version})
        if result.rowcount:  # type: ignore[attr-defined]
            claimed[draft.send_id] = draft.message
    return claimed


def transmit(message: OutgoingMessage, transport: Transport) -> Outcome:
    """Hand the message to the transport; every failure becomes an `Outcome` error."""
    try:
        return Outcome(provider_message_id=transport.send(message))
    except TransportError as error:
        return Outcome(error=error)
    except Exception as error:
        # A bug, not a refusal: whether anything went out is unknown, so never retry it.
        log.exception("transport_crashed", extra={"send_id": message.send_id})
        return Outcome(error=FatalError(None, f"transport error: {type(error).__name__}: "
                                              f"{error}"))


def retry_delay(settings: Settings, *, attempts: int, jitter: bool = True) -> float:
    """Seconds before attempt `attempts + 1`: doubling from the base, capped, +-10% jitter."""
    delay = min(settings.send_retry_base_s * 2.0 ** max(attempts - 1, 0), MAX_RETRY_DELAY_S)
    return delay * random.uniform(0.9, 1.1) if jitter else delay


def record_outcomes(db: Session, *, outcomes: Mapping[str, Outcome],
                    settings: Settings) -> dict[str, float]:
    """Record what became of transmitted sends; return the retry delay of those to retry.

    The rows are read (locked, in id order) into detached `Send`s that the lifecycle functions
    update as usual, then written back with one prebuilt UPDATE: the ORM's unit of work done by
    hand, at a fraction of its cost, on a path that runs for every send. Their system events are
    stored together, after the rows.
    """
    if not outcomes:  # the first group of a batch has nothing before it to record
        return {}
    rows = {row.id: row for row in db.execute(_LOCK, {"b_ids": sorted(outcomes)})}
    retries: dict[str, float] = {}
    write_backs: list[dict[str, Any]] = []
    with lifecycle.system_events_last(db):
        for send_id, outcome in outcomes.items():
            send, contact_live = _recordable(rows.get(send_id), outcome, send_id)
            if send is None:
                continue
            if contact_live:
                retry_in = _apply_outcome(db, send, outcome.error, outcome.provider_message_id,
                                          settings)
                if retry_in is not None:
                    retries[send_id] = retry_in
            else:
                _apply_orphan_outcome(send, outcome.error, outcome.provider_message_id)
            write_backs.append({"b_id": send_id, **{
                f"w_{column.name}": getattr(send, column.name) for column in _LIFECYCLE_COLUMNS}})
        if write_backs:
            db.execute(_WRITE_BACK, write_backs)
    return retries


def _recordable(row: Any, outcome: Outcome, send_id: str) -> tuple[Send | None, bool]:
    """The send to record `outcome` on, as a detached `Send`, and whether its contact lives;
    (None, False) when there is nothing to record."""
    # A success is recorded on a `failed` send too: the stale sweep may have given up on a slow
    # send that did go out in the end.
    expected = ("sending",) if outcome.error else ("sending", "failed")
    if row is None or row.status not in expected:
        log.warning("send_outcome_ignored %s", send_id, extra={"send_id": send_id})
        return None, False
    columns = dict(row._mapping)
    contact_live = bool(columns.pop("contact_live")) and columns["email"] != ERASED_EMAIL
    return Send(**columns), contact_live


def _apply_outcome(db: Session, send: Send, error: TransportError | None,
                   provider_message_id: str | None, settings: Settings) -> float | None:
    if error is None:
        lifecycle.mark_sent(db, send=send, provider_message_id=provider_message_id)
        send.error = None
    elif isinstance(error, TransientError) and send.attempts < settings.send_max_attempts:
        send.status, send.updated_at = "queued", utcnow()
        send.error = f"Attempt {send.attempts} of {settings.send_max_attempts}: {error}"
        return retry_delay(settings, attempts=send.attempts)
    elif isinstance(error, TransientError):
        lifecycle.mark_bounced(db, send=send, bounce_type="soft",
                               reason=f"{error} (gave up after {send.attempts} attempts)")
    elif isinstance(error, PermanentError):
        lifecycle.mark_bounced(db, send=send, bounce_type="hard", reason=str(error))
    else:
        send.status, send.error, send.updated_at = "failed", str(error), utcnow()
    return None


def _apply_orphan_outcome(send: Send, error: TransportError | None,
                          provider_message_id: str | None) -> None:
    """The outcome of a send whose contact was deleted while it was out: no system event and no
    suppression (there is no contact), no retry, and no transport text (it may quote the address).
    """
    now = utcnow()
    if error is None:
        send.status, send.sent_at, send.error = "sent", now, None
        send.provider_message_id = provider_message_id
    else:
        send.status, send.error = "failed", DELETED_WHILE_SENDING
    send.updated_at = now


# --- contact deletion ----------------------------------------------------------------------------


def erase_contact_sends(db: Session, *, tenant_id: str, contact_id: str, email: str) -> int:
    """Cancel a deleted contact's unclaimed sends and erase it from all its sends; return how
    many were cancelled.

    A `queued` send (waiting for its task, or for a retry) becomes `rejected`: its task, the
    lost-send sweep and a worker that already rendered it all find nothing to claim. A send
    already claimed (`sending`) is left to finish, since its message is out of our hands; its
    outcome is then recorded without a system event (`record_outcomes`). Rows stay, so the
    metrics keep counting what was sent, but without the person: the address, the variables and
    enrolling event they were rendered with, the rendered subject, and any error text or link
    that quotes the address (such a link stops working; the others keep redirecting).
    """
    now = utcnow()
    mine = (Send.tenant_id == tenant_id, Send.contact_id == contact_id)
    cancelled = db.execute(update(Send).where(*mine, Send.status == "queued").values(
        status="rejected", error=CANCELLED_BY_DELETION, updated_at=now))
    address = email.lower()
    for send_id, error, links in db.execute(select(Send.id, Send.error, Send.links)
                                            .where(*mine)):
        changes: dict[str, Any] = {}
        if error and address in error.lower():
            changes["error"] = re.sub(re.escape(email), REDACTED, error, flags=re.IGNORECASE)
        if isinstance(links, list) and any(_quotes(link, address) for link in links):
            changes["links"] = ["" if _quotes(link, address) else link for link in links]
        if changes:
            db.execute(update(Send).where(Send.id == send_id).values(changes))
    db.execute(update(Send).where(*mine).values(
        email=ERASED_EMAIL, subject=None, variables={}, context={}, updated_at=now))
    return int(cancelled.rowcount)  # type: ignore[attr-defined]


def _quotes(link: Any, address: str) -> bool:
    """Whether a stored link carries the (lower-cased) address, plainly or percent-encoded."""
    return isinstance(link, str) and address in unquote_plus(link).lower()


# --- sweeps (beat) -------------------------------------------------------------------------------


def fail_interrupted_sends(db: Session, *, older_than: timedelta) -> int:
    """Mark sends stuck in `sending` (their worker died mid-send) as failed; return how many."""
    now = utcnow()
    result = db.execute(
        update(Send).where(Send.status == "sending", Send.claimed_at < now - older_than)
        .values(status="failed", error=INTERRUPTED, updated_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]


def take_lost_sends(db: Session, *, older_than: timedelta, settings: Settings,
                    limit: int = 1000) -> list[str]:
    """Ids of `queued` sends whose task seems lost (the broker dropped it), to enqueue again.

    A send waiting out a retry delay is not lost until that delay has passed too. The chosen rows
    are touched, so the next sweep leaves them alone for another `older_than`.
    """
    now = utcnow()
    rows = db.execute(select(Send.id, Send.attempts, Send.updated_at)
                      .where(Send.status == "queued", Send.updated_at < now - older_than)
                      .order_by(Send.updated_at).limit(limit)).all()
    due = [row.id for row in rows if row.attempts == 0 or row.updated_at + timedelta(
        seconds=retry_delay(settings, attempts=row.attempts, jitter=False) * 1.1
    ) + older_than < now]
    if not due:
        return []
    return list(db.scalars(update(Send).where(Send.id.in_(due), Send.status == "queued")
                           .values(updated_at=now).returning(Send.id)))


# --- reading -------------------------------------------------------------------------------------


def get_send(db: Session, *, tenant_id: str, send_id: str) -> Send:
    """One of the tenant's sends, or NotFound (another tenant's id is not found either)."""
    send = db.scalar(select(Send).where(Send.tenant_id == tenant_id, Send.id == send_id))
    if send is None:
        raise NotFound(f"Send {send_id} not found.")
    return send


def list_sends(db: Session, *, tenant_id: str, status: str | None = None,
               contact_id: str | None = None, template_id: str | None = None, limit: int,
               cursor: str | None = None) -> Page[Send]:
    """A page of the tenant's sends, newest first (ids sort by creation time)."""
    query = select(Send).where(Send.tenant_id == tenant_id)
    if status == "queued":
        query = query.where(Send.status.in_(("queued", "sending")))
    elif status is not None:
        query = query.where(Send.status == status)
    if contact_id is not None:
        query = query.where(Send.contact_id == contact_id)
    if template_id is not None:
        query = query.where(Send.template_id == template_id)
    return page_by_id(db, query, Send.id, limit=limit, cursor=cursor, newest_first=True)


def api_status(send: Send) -> str:
    """The status the API shows."""
    return "queued" if send.status == "sending" else send.status


def accepted_view(send: Send) -> dict[str, Any]:
    """The 202 answer to `POST /send`."""
    return {"id": send.id, "to": send.email, "templateId": send.template_id, "status": "queued",
            "createdAt": isoformat(send.created_at)}


def send_view(send: Send) -> dict[str, Any]:
    """The API's send object."""
    return {
        "id": send.id, "contactId": send.contact_id, "email": send.email,
        "templateId": send.template_id, "templateVersion": send.template_version,
        "subject": send.subject, "status": api_status(send), "source": send.source,
        "sourceId": send.source_id, "sentAt": isoformat(send.sent_at),
        "deliveredAt": isoformat(send.delivered_at), "openedAt": isoformat(send.opened_at),
        "clickedAt": isoformat(send.clicked_at), "bounceType": send.bounce_type,
        "error": send.error, "attempts": send.attempts, "createdAt": isoformat(send.created_at),
    }

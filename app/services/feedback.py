"""SES delivery feedback (Delivery, Bounce, Complaint) applied to the e-mail lifecycle.

A notification is applied once per SNS MessageId: the WebhookDelivery row is inserted in the
same transaction as the lifecycle changes, so a retried or concurrent duplicate is a no-op.
Unknown notification types and unknown sends are acknowledged and ignored, never guessed at;
so are notifications about the sends of a deleted contact (nothing about it is recorded).
The dedupe rows are forgotten after `DEDUPE_WINDOW` (beat task `webhooks.purge_deliveries`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy import select
from sqlalchemy import tuple_
from sqlalchemy.orm import Session

from app.db import insert_if_absent
from app.db import is_postgres
from app.models import Contact
from app.models import Send
from app.models import WebhookDelivery
from app.services import lifecycle
from app.timeutil import parse_iso
from app.timeutil import truncate_ms
from app.timeutil import utcnow

log = logging.getLogger(__name__)

PROVIDER = "ses"
SEND_ID_HEADER = "x-kraiter-send-id"
MAX_REASON_CHARS = 1000
# How long a processed notification's MessageId is remembered. SNS stops retrying an HTTP(S)
# delivery after 3,600 s at most (a hard AWS limit), so two weeks leaves a wide margin.
DEDUPE_WINDOW = timedelta(days=14)
PURGE_BATCH = 5000


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _when(value: Any) -> datetime | None:
    """The provider's timestamp, or None (the lifecycle then uses now) when absent or garbled."""
    if not isinstance(value, str):
        return None
    try:
        return truncate_ms(parse_iso(value))
    except ValueError:
        return None


def _header(mail: dict[str, Any], name: str) -> str | None:
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == name:
            value = header.get("value")
            return value.strip() if isinstance(value, str) else None
    return None


def find_send(db: Session, *, mail: dict[str, Any]) -> Send | None:
    """The send an SES `mail` object is about, locked: by SES message id, else our header."""
    message_id = mail.get("messageId")
    if isinstance(message_id, str) and message_id:
        send = db.scalars(select(Send).where(Send.provider_message_id == message_id)
                          .with_for_update()).first()
        if send is not None:
            return send
    send_id = _header(mail, SEND_ID_HEADER)
    if send_id:
        return db.scalars(select(Send).where(Send.id == send_id).with_for_update()).first()
    return None


def _addressed_to(send: Send, recipients: Any) -> list[dict[str, Any]]:
    """The recipient entries naming the send's address (a send has exactly one recipient)."""
    return [entry for entry in recipients or [] if isinstance(entry, dict)
            and str(entry.get("emailAddress", "")).strip().lower() == send.email.lower()]


def _delivery(db: Session, send: Send, notification: dict[str, Any]) -> bool:
    delivery = _object(notification.get("delivery"))
    return lifecycle.mark_delivered(db, send=send, at=_when(delivery.get("timestamp")))


def _bounce(db: Session, send: Send, notification: dict[str, Any]) -> bool:
    bounce = _object(notification.get("bounce"))
    recipients = _addressed_to(send, bounce.get("bouncedRecipients"))
    if not recipients:
        # SES reports out-of-office replies as Undetermined with no recipients: log only.
        log.info("ses_bounce_without_recipient send_id=%s bounce_type=%s", send.id,
                 bounce.get("bounceType"))
        return False
    bounce_type = "hard" if bounce.get("bounceType") == "Permanent" else "soft"
    reason = (recipients[0].get("diagnosticCode") or bounce.get("bounceSubType")
              or bounce.get("bounceType") or "Bounce")
    return lifecycle.mark_bounced(db, send=send, bounce_type=bounce_type,
                                  reason=str(reason)[:MAX_REASON_CHARS],
                                  at=_when(bounce.get("timestamp")))


def _complaint(db: Session, send: Send, notification: dict[str, Any]) -> bool:
    complaint = _object(notification.get("complaint"))
    recipients = complaint.get("complainedRecipients")
    # Feedback loops may redact the complainant; an empty list still means this message.
    if recipients and not _addressed_to(send, recipients):
        log.info("ses_complaint_for_other_recipient send_id=%s", send.id)
        return False
    return lifecycle.mark_complained(db, send=send, at=_when(complaint.get("timestamp")))


_HANDLERS: dict[str, Callable[[Session, Send, dict[str, Any]], bool]] = {
    "Delivery": _delivery,
    "Bounce": _bounce,
    "Complaint": _complaint,
}


def apply_notification(db: Session, *, delivery_id: str, message: str) -> str:
    """Apply one SES notification (the SNS `Message`) once per SNS MessageId; say what happened.

    The answer is `duplicate`, `ignored` (not an SES notification we act on), `unknown_send`,
    `applied` or `unchanged` (the send already had that outcome).
    """
    row = {"provider": PROVIDER, "message_id": delivery_id, "received_at": utcnow()}
    if not insert_if_absent(db, WebhookDelivery.__table__, row, ["provider", "message_id"]):
        return "duplicate"
    try:
        notification = _object(json.loads(message))
    except ValueError:
        notification = {}
    kind = notification.get("notificationType") or notification.get("eventType")
    handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        log.info("ses_notification_ignored sns_message_id=%s type=%s", delivery_id, kind)
        return "ignored"
    mail = _object(notification.get("mail"))
    send = find_send(db, mail=mail)
    if send is None:
        log.warning("ses_send_unknown sns_message_id=%s ses_message_id=%s", delivery_id,
                    mail.get("messageId"))
        return "unknown_send"
    if not _contact_exists(db, send):
        # Its sends were erased with it: record no event, status or diagnostic text (a bounce's
        # text often quotes the address).
        log.info("ses_contact_deleted sns_message_id=%s send_id=%s", delivery_id, send.id)
        return "contact_deleted"
    return "applied" if handler(db, send, notification) else "unchanged"


def _contact_exists(db: Session, send: Send) -> bool:
    """Whether the send's contact still exists (asked after the send's row lock is held, so a
    deletion that erased this send has committed and shows)."""
    return db.scalar(select(Contact.id).where(Contact.tenant_id == send.tenant_id,
                                              Contact.id == send.contact_id)) is not None


# --- purging the dedupe rows -------------------------------------------------------------------


def purge_deliveries(db: Session, *, older_than: timedelta = DEDUPE_WINDOW,
                     batch_size: int = PURGE_BATCH, now: datetime | None = None) -> int:
    """Forget up to `batch_size` processed notifications older than `older_than`; return how
    many. Idempotent; the caller commits each batch and calls again while a batch comes back
    full. SNS gives up on a message within an hour, so no retry outlives its row.
    """
    cutoff = (now or utcnow()) - older_than
    query = (select(WebhookDelivery.provider, WebhookDelivery.message_id)
             .where(WebhookDelivery.received_at < cutoff)
             .order_by(WebhookDelivery.received_at).limit(batch_size))
    if is_postgres(db):
        query = query.with_for_update(skip_locked=True)  # concurrent purges take disjoint rows
    keys = [tuple(row) for row in db.execute(query)]
    if not keys:
        return 0
    db.execute(delete(WebhookDelivery).where(
        tuple_(WebhookDelivery.provider, WebhookDelivery.message_id).in_(keys)))
    return len(keys)

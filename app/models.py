"""Tables, as SQLAlchemy 2 mapped classes. No queries here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger
from sqlalchemy import Boolean
from sqlalchemy import ForeignKey
from sqlalchemy import ForeignKeyConstraint
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import UniqueConstraint
from sqlalchemy import text
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from app.db import Base
from app.db import JSONDocument
from app.db import UTCDateTime

DEFAULT_RETENTION_DAYS = 365


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    retention_days: Mapped[int] = mapped_column(Integer, default=DEFAULT_RETENTION_DAYS)
    email_from: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    key_prefix: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the raw key: keys carry 256 random bits, so a fast hash is enough and lets the
    # lookup go through a unique index; the raw key is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "email"),
        Index("ix_contacts_tenant_id_id", "tenant_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class _EventColumns:
    """Columns shared by the live events table and its archive (same shape, moved row by row)."""

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    contact_id: Mapped[str] = mapped_column(String(40))
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    source: Mapped[str] = mapped_column(String(16), default="api")
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Position in the tenant's live feed (see `EventFeed`); null for events stored before it.
    feed_seq: Mapped[int | None] = mapped_column(BigInteger)


class EventFeed(Base):
    """Each tenant's live-feed counter: the last position handed to a stored event.

    A transaction storing events bumps the counter and keeps its row locked until it commits, so
    positions become visible in order and a reader that has seen position N has seen every event
    up to N: the live feed resumes without gaps or repeats.
    """

    __tablename__ = "event_feeds"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class Event(_EventColumns, Base):
    """A tracked event. Listing is newest first by (timestamp, id); each index serves one filter.

    B-tree indexes are read backwards for DESC order, so they are declared ascending.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_tenant_feed", "tenant_id", "timestamp", "id"),
        Index("ix_events_tenant_name", "tenant_id", "name", "timestamp", "id"),
        # tenant_id leads so one index matches the whole filter and the sort: with contact_id alone
        # the planner combined two indexes and sorted a busy contact's rows (bench/list_events.py).
        Index("ix_events_contact_timeline", "tenant_id", "contact_id", "timestamp", "id"),
        Index("ix_events_tenant_feed_seq", "tenant_id", "feed_seq"),
    )


class ArchivedEvent(_EventColumns, Base):
    """Events past their tenant's retention, moved out of the hot table."""

    __tablename__ = "events_archive"
    __table_args__ = (
        Index("ix_events_archive_tenant_feed", "tenant_id", "timestamp", "id"),
        Index("ix_events_archive_contact_timeline", "tenant_id", "contact_id", "timestamp", "id"),
    )


class IdempotencyRecord(Base):
    """The first answer to a request sent with an `Idempotency-Key`, replayed to retries."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[Any] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)





class Template(Base):
    """A tenant's e-mail template (client-chosen id); `version` counts its changes."""

    __tablename__ = "templates"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    mjml: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Send(Base):
    """One e-mail to one contact: claimed before the transport is called, so it goes out once.

    `status` is the API's status plus `sending` (claimed; the transport may be running). `links`
    holds the original URLs of the tracked links, so a click token carries only an index.
    """

    __tablename__ = "sends"
    __table_args__ = (
        Index("ix_sends_tenant_id", "tenant_id", "id"),
        Index("ix_sends_tenant_contact", "tenant_id", "contact_id", "id"),
        Index("ix_sends_tenant_template", "tenant_id", "template_id", "id"),
        Index("ix_sends_tenant_status", "tenant_id", "status", "id"),
        Index("ix_sends_status_claimed", "status", "claimed_at"),
        # At most one e-mail per (enrolment, step): the sequence engine relies on this.
        UniqueConstraint("enrolment_id", "step_index"),
        UniqueConstraint("provider_message_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(String(40))
    email: Mapped[str] = mapped_column(String(320))
    template_id: Mapped[str] = mapped_column(String(200))
    template_version: Mapped[int | None] = mapped_column(Integer)
    subject: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    source: Mapped[str] = mapped_column(String(16), default="transactional")
    source_id: Mapped[str | None] = mapped_column(String(200))
    enrolment_id: Mapped[str | None] = mapped_column(String(40))
    step_index: Mapped[int | None] = mapped_column(Integer)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    context: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    links: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    message_id: Mapped[str | None] = mapped_column(String(255))
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    complained_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bounce_type: Mapped[str | None] = mapped_column(String(8))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """Provider notifications already processed (SNS retries the same MessageId)."""

    __tablename__ = "webhook_deliveries"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Sequence(Base):
    """A tenant's sequence (client-chosen id); `version` is the current definition's number."""

    __tablename__ = "sequences"
    __table_args__ = (Index("ix_sequences_tenant_status", "tenant_id", "status", "id"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SequenceVersion(Base):
    """An immutable definition snapshot; enrolments run the version they enrolled in."""

    __tablename__ = "sequence_versions"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "sequence_id"], ["sequences.tenant_id", "sequences.id"],
                             ondelete="CASCADE"),
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sequence_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[str] = mapped_column(Text)  # the text as the client gave it
    triggers: Mapped[Any] = mapped_column(JSONDocument, nullable=True)  # the request's, as given
    canonical: Mapped[str] = mapped_column(Text)  # Definition.to_json(): what the engine runs
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Enrolment(Base):
    """A contact's way through one sequence version; `next_step_at` is the schedule's truth.

    `exclusive` is false only for `reenrol: always` enrolments, which may run side by side; the
    partial unique index allows one active exclusive enrolment per contact and sequence.
    `enqueued_at` says when a task was last sent for the pending step (the sweeper's bookmark).
    """

    __tablename__ = "enrolments"
    __table_args__ = (
        Index("uq_enrolments_one_active", "tenant_id", "sequence_id", "contact_id", unique=True,
              postgresql_where=text("status = 'active' AND exclusive"),
              sqlite_where=text("status = 'active' AND exclusive")),
        Index("ix_enrolments_due", "next_step_at",
              postgresql_where=text("status = 'active'"), sqlite_where=text("status = 'active'")),
        Index("ix_enrolments_scheduled", "tenant_id", "next_step_at", "id",
              postgresql_where=text("status = 'active'"), sqlite_where=text("status = 'active'")),
        Index("ix_enrolments_sequence", "tenant_id", "sequence_id", "id"),
        Index("ix_enrolments_contact", "tenant_id", "contact_id", "sequence_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    sequence_id: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    contact_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default="active")
    exclusive: Mapped[bool] = mapped_column(Boolean, default=True)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    next_step_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_reason: Mapped[str | None] = mapped_column(String(40))
    event: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

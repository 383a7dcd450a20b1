"""Delivering sends without a worker: claim, compose, transmit, record, and the sweeps."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy import update

from app import db
from app.config import Settings
from app.errors import NotFound
from app.errors import Unprocessable
from app.models import Contact
from app.models import Event
from app.models import Send
from app.models import Template
from app.models import Tenant as TenantRow
from app.services import contacts
from app.services import sending
from app.services import tokens
from app.timeutil import utcnow
from app.transports import FatalError
from app.transports import PermanentError
from app.transports import TransientError
from app.transports import TransportError
from app.transports import memory
from app.transports.memory import MemoryTransport
from app.transports.message import OutgoingMessage
from tasks.sends import deliver_sends
from tests.conftest import Tenant

HTML = ("<html><body><h1>Hi {{ contact.properties.name | default: 'there' }}</h1>"
        "<p>Order {{ orderId }}: <a href=\"https://shop.example/orders/{{ orderId }}\">view</a>"
        "</p><p><a href=\"{{ unsubscribeUrl }}\">Unsubscribe</a></p></body></html>")

SUBJECT = "Order {{ orderId }} for {{ contact.email }}"


class ScriptedTransport:
    """Answers each send with the next scripted error (None: accept with a provider id)."""

    name = "scripted"

    def __init__(self, *script: TransportError | None) -> None:
        self.script = list(script)
        self.sent: list[OutgoingMessage] = []

    def send(self, message: OutgoingMessage) -> str | None:
        answer = self.script.pop(0) if self.script else None
        if answer is not None:
            raise answer
        self.sent.append(message)
        return f"queue-{len(self.sent)}-{message.send_id}"

    def close(self) -> None:
        return None


def deliver_send(send_id: str, *, settings: Settings, transport: Any) -> float | None:
    """Deliver one send as the `sends.deliver` task does; its retry delay, if any."""
    return deliver_sends([send_id], settings=settings, transport=transport).get(send_id)


@pytest.fixture(autouse=True)
def empty_outbox() -> Iterator[None]:
    memory.clear()
    yield
    memory.clear()


def _template(tenant: Tenant, template_id: str = "order", **columns: Any) -> None:
    now = utcnow()
    values: dict[str, Any] = {"name": "Order", "subject": SUBJECT, "html": HTML, "mjml": None,
                              "text": None, **columns}
    with db.transaction() as session:
        session.add(Template(tenant_id=tenant.id, id=template_id, version=1, created_at=now,
                             updated_at=now, **values))


def _queue(tenant: Tenant, to: str = "ann@example.com", *, template_id: str = "order",
           ignore_unsubscribe: bool = False) -> str:
    with db.transaction() as session:
        send = sending.send_transactional(session, tenant_id=tenant.id, to=to,
                                          template_id=template_id, variables={"orderId": "A-1"},
                                          ignore_unsubscribe=ignore_unsubscribe)
        return send.id


def _send(send_id: str) -> Send:
    with db.transaction() as session:
        send = session.get(Send, send_id)
        assert send is not None
        return send


def _contact(tenant: Tenant, email: str) -> Contact:
    with db.transaction() as session:
        contact = session.scalar(select(Contact).where(Contact.tenant_id == tenant.id,
                                                       Contact.email == email))
        assert contact is not None
        return contact


def _set_contact(tenant: Tenant, email: str, **values: Any) -> None:
    with db.transaction() as session:
        session.execute(update(Contact).where(Contact.tenant_id == tenant.id,
                                              Contact.email == email).values(**values))


def _events(tenant: Tenant, name: str) -> list[Event]:
    with db.transaction() as session:
        return list(session.scalars(select(Event).where(Event.tenant_id == tenant.id,
                                                        Event.name == name)))


def test_a_send_goes_out_once_with_tracking_and_headers(tenant: Tenant,
                                                        settings: Settings) -> None:
    _template(tenant)
    send_id = _queue(tenant)

    assert deliver_send(send_id, settings=settings, transport=MemoryTransport()) is None
    assert deliver_send(send_id, settings=settings, transport=MemoryTransport()) is None

    assert len(memory.outbox) == 1
    message = memory.outbox[0].parsed()
    unsubscribe = message["List-Unsubscribe"]
    token = unsubscribe.removeprefix(f"<{settings.public_url}/unsubscribe/").removesuffix(">")
    assert tokens.read_token(settings.secret_keys, tokens.UNSUBSCRIBE, token) == [send_id]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["X-Kraiter-Send-Id"] == send_id
    assert message["To"] == "ann@example.com"
    assert message["From"] == settings.email_from
    assert message["Subject"] == "Order A-1 for ann@example.com"
    text, html = (part.get_content() for part in message.iter_parts())
    assert "Order A-1" in text and settings.public_url + "/unsubscribe/" in text
    assert f"{settings.public_url}/t/o/" in html and f"{settings.public_url}/t/c/" in html
    assert "https://shop.example/orders/A-1" not in html
    stored = _send(send_id)
    assert stored.status == "sent" and stored.sent_at is not None and stored.attempts == 1
    assert stored.links == ["https://shop.example/orders/A-1"]
    assert stored.subject == "Order A-1 for ann@example.com"
    assert stored.message_id == message["Message-ID"]
    assert (stored.message_id or "").endswith("@localhost>")
    [event] = _events(tenant, "email.sent")
    assert event.properties == {"sendId": send_id, "templateId": "order"}
    assert event.source == "system"


def test_the_tenant_sender_wins_over_email_from(make_tenant: Any, settings: Settings) -> None:
    tenant = make_tenant("Shop")
    with db.transaction() as session:
        session.execute(update(TenantRow).where(TenantRow.id == tenant.id)
                        .values(email_from="Shop Ünited <news@shop.example>"))
    _template(tenant)
    deliver_send(_queue(tenant), settings=settings, transport=MemoryTransport())

    message = memory.outbox[0].parsed()
    assert message["From"] == "Shop Ünited <news@shop.example>"
    assert message["Message-ID"].endswith("@shop.example>")


def test_unknown_template_is_not_found_and_creates_no_contact(tenant: Tenant) -> None:
    with pytest.raises(NotFound), db.transaction() as session:
        sending.send_transactional(session, tenant_id=tenant.id, to="new@example.com",
                                   template_id="missing", variables={}, ignore_unsubscribe=False)
    with db.transaction() as session:
        assert session.scalar(select(Contact).where(Contact.tenant_id == tenant.id)) is None


def test_suppressed_and_unsubscribed_contacts_are_refused_up_front(tenant: Tenant) -> None:
    _template(tenant)
    _queue(tenant, "gone@example.com")
    _queue(tenant, "quiet@example.com")
    _set_contact(tenant, "gone@example.com", suppressed=True)
    _set_contact(tenant, "quiet@example.com", subscribed=False)

    with pytest.raises(Unprocessable):
        _queue(tenant, "gone@example.com", ignore_unsubscribe=True)
    with pytest.raises(Unprocessable):
        _queue(tenant, "quiet@example.com")
    assert _queue(tenant, "quiet@example.com", ignore_unsubscribe=True).startswith("snd_")


@pytest.mark.parametrize(("change", "ignore", "status"), [
    ({"suppressed": True}, True, "rejected"),
    ({"subscribed": False}, False, "rejected"),
    ({"subscribed": False}, True, "sent"),
])
def test_the_contact_is_checked_again_when_the_send_is_claimed(
        tenant: Tenant, settings: Settings, change: dict[str, bool], ignore: bool,
        status: str) -> None:
    _template(tenant)
    send_id = _queue(tenant, ignore_unsubscribe=ignore)
    _set_contact(tenant, "ann@example.com", **change)

    deliver_send(send_id, settings=settings, transport=MemoryTransport())

    assert _send(send_id).status == status
    assert len(memory.outbox) == (1 if status == "sent" else 0)


def test_a_template_that_fails_to_render_fails_the_send(tenant: Tenant,
                                                        settings: Settings) -> None:
    _template(tenant, html="<p>{{ 1 | divided_by: 0 }}</p>")
    send_id = _queue(tenant)

    deliver_send(send_id, settings=settings, transport=MemoryTransport())

    stored = _send(send_id)
    assert stored.status == "failed" and (stored.error or "").startswith("Template error")
    assert memory.outbox == [] and _events(tenant, "email.sent") == []


def test_a_deleted_template_fails_the_send(tenant: Tenant, settings: Settings) -> None:
    _template(tenant)
    send_id = _queue(tenant)
    with db.transaction() as session:
        session.delete(session.get(Template, (tenant.id, "order")))

    deliver_send(send_id, settings=settings, transport=MemoryTransport())

    assert _send(send_id).status == "failed"
    assert memory.outbox == []


def test_transient_failures_are_retried_then_sent(tenant: Tenant, settings: Settings) -> None:
    _template(tenant)
    send_id = _queue(tenant)
    transport = ScriptedTransport(TransientError(451, "try later"), None)

    delay = deliver_send(send_id, settings=settings, transport=transport)
    assert delay is not None and delay == pytest.approx(settings.send_retry_base_s, rel=0.11)
    waiting = _send(send_id)
    assert waiting.status == "queued" and "451 try later" in (waiting.error or "")
    assert deliver_send(send_id, settings=settings, transport=transport) is None

    stored = _send(send_id)
    assert stored.status == "sent" and stored.attempts == 2 and stored.error is None
    assert stored.provider_message_id == f"queue-1-{send_id}"
    assert len(transport.sent) == 1
    # One Message-ID for every attempt, so a server that saw an earlier one can tell.
    assert transport.sent[0].parsed()["Message-ID"] == stored.message_id


def test_transient_failures_end_as_a_soft_bounce(tenant: Tenant, settings: Settings) -> None:
    settings = dataclasses.replace(settings, send_max_attempts=3, send_retry_base_s=1.0)
    _template(tenant)
    send_id = _queue(tenant)
    transport = ScriptedTransport(*[TransientError(421, "busy")] * 3)

    delays = [deliver_send(send_id, settings=settings, transport=transport) for _ in range(3)]

    assert delays[0] == pytest.approx(1.0, rel=0.11)
    assert delays[1] == pytest.approx(2.0, rel=0.11)
    assert delays[2] is None
    stored = _send(send_id)
    assert (stored.status, stored.bounce_type, stored.attempts) == ("bounced", "soft", 3)
    [event] = _events(tenant, "email.bounced")
    assert event.properties["bounceType"] == "soft" and "421 busy" in event.properties["reason"]
    assert _contact(tenant, "ann@example.com").suppressed is False


def test_a_permanent_refusal_is_a_hard_bounce_that_suppresses(tenant: Tenant,
                                                              settings: Settings) -> None:
    _template(tenant)
    send_id = _queue(tenant)

    deliver_send(send_id, settings=settings,
                 transport=ScriptedTransport(PermanentError(550, "no such user")))

    stored = _send(send_id)
    assert (stored.status, stored.bounce_type) == ("bounced", "hard")
    assert _contact(tenant, "ann@example.com").suppressed is True
    [event] = _events(tenant, "email.bounced")
    assert event.properties == {"sendId": send_id, "templateId": "order", "bounceType": "hard",
                                "reason": "550 no such user"}


def test_a_fatal_error_fails_without_retry_or_bounce(tenant: Tenant, settings: Settings) -> None:
    _template(tenant)
    send_id = _queue(tenant)

    assert deliver_send(send_id, settings=settings,
                        transport=ScriptedTransport(FatalError(535, "bad password"))) is None

    stored = _send(send_id)
    assert (stored.status, stored.error) == ("failed", "535 bad password")
    assert _events(tenant, "email.bounced") == []
    assert _contact(tenant, "ann@example.com").suppressed is False


def test_a_crashing_transport_is_never_retried(tenant: Tenant, settings: Settings) -> None:
    class Broken(ScriptedTransport):
        def send(self, message: OutgoingMessage) -> str | None:
            raise RuntimeError("boom")

    _template(tenant)
    send_id = _queue(tenant)

    assert deliver_send(send_id, settings=settings, transport=Broken()) is None
    assert _send(send_id).status == "failed"


def test_a_provider_id_already_taken_is_not_stored_twice(tenant: Tenant,
                                                         settings: Settings) -> None:
    class SameId(ScriptedTransport):
        def send(self, message: OutgoingMessage) -> str | None:
            return "OK"

    _template(tenant)
    first, second = _queue(tenant), _queue(tenant, "bob@example.com")
    for send_id in (first, second):
        deliver_send(send_id, settings=settings, transport=SameId())

    assert _send(first).provider_message_id == "OK"
    assert (_send(second).status, _send(second).provider_message_id) == ("sent", None)


def _age(send_id: str, **values: Any) -> None:
    with db.transaction() as session:
        session.execute(update(Send).where(Send.id == send_id).values(**values))


def test_a_send_stuck_in_sending_is_failed_and_never_resent(tenant: Tenant,
                                                            settings: Settings) -> None:
    _template(tenant)
    stuck, recent = _queue(tenant), _queue(tenant, "bob@example.com")
    _age(stuck, status="sending", claimed_at=utcnow() - timedelta(minutes=30))
    _age(recent, status="sending", claimed_at=utcnow())

    with db.transaction() as session:
        failed = sending.fail_interrupted_sends(session, older_than=timedelta(minutes=10))
    deliver_send(stuck, settings=settings, transport=MemoryTransport())

    assert failed == 1
    assert (_send(stuck).status, _send(stuck).error) == ("failed", sending.INTERRUPTED)
    assert _send(recent).status == "sending"
    assert memory.outbox == []


def test_lost_queued_sends_are_taken_once_and_after_their_retry_delay(
        tenant: Tenant, settings: Settings) -> None:
    _template(tenant)
    lost, fresh, backing_off = (_queue(tenant, f"{name}@example.com")
                                for name in ("lost", "fresh", "waiting"))
    long_ago = utcnow() - timedelta(minutes=2)
    _age(lost, updated_at=long_ago)
    # Its retry is due 60 s * 2^2 = 4 min after its last attempt: not lost yet.
    _age(backing_off, updated_at=long_ago, attempts=3)

    with db.transaction() as session:
        taken = sending.take_lost_sends(session, older_than=timedelta(minutes=1),
                                        settings=settings)
    with db.transaction() as session:
        again = sending.take_lost_sends(session, older_than=timedelta(minutes=1),
                                        settings=settings)

    assert taken == [lost]
    assert again == []
    assert fresh not in taken


def test_a_batch_sends_each_queued_send_once(tenant: Tenant, settings: Settings) -> None:
    _template(tenant)
    _template(tenant, "broken", html="<p>{{ 1 | divided_by: 0 }}</p>")
    first, second = _queue(tenant), _queue(tenant, "bob@example.com")
    broken = _queue(tenant, "cara@example.com", template_id="broken")
    deliver_send(second, settings=settings, transport=MemoryTransport())

    retries = deliver_sends([first, broken, second, first, "snd_unknown"], settings=settings,
                            transport=MemoryTransport())

    assert retries == {}
    assert [message.send_id for message in memory.outbox] == [second, first]
    assert (_send(first).status, _send(second).status, _send(broken).status) == (
        "sent", "sent", "failed")
    assert len(_events(tenant, "email.sent")) == 2


def test_a_contact_suppressed_after_rendering_is_not_claimed(tenant: Tenant,
                                                             settings: Settings) -> None:
    _template(tenant)
    send_id = _queue(tenant)
    with db.transaction() as session:
        [draft] = sending.prepare_sends(session, send_ids=[send_id], settings=settings)
    _set_contact(tenant, "ann@example.com", suppressed=True)

    with db.transaction() as session:
        assert sending.claim_sends(session, drafts=[draft]) == {}
    assert _send(send_id).status == "queued"  # the next attempt rejects it, saying why

    deliver_send(send_id, settings=settings, transport=MemoryTransport())
    assert (_send(send_id).status, memory.outbox) == ("rejected", [])


# --- a contact deleted while its e-mail is out ---------------------------------------------------


class DeletingTransport(ScriptedTransport):
    """Deletes the recipient's contact while the message is in its hands, then answers."""

    def __init__(self, tenant: Tenant, *script: TransportError | None) -> None:
        super().__init__(*script)
        self.tenant = tenant

    def send(self, message: OutgoingMessage) -> str | None:
        with db.transaction() as session:
            contacts.delete_contact(session, tenant_id=self.tenant.id, ref=message.recipients[0])
        return super().send(message)


@pytest.mark.parametrize(("answer", "status", "error"), [
    (None, "sent", None),
    (TransientError(451, "<ann@example.com> busy"), "failed", sending.DELETED_WHILE_SENDING),
    (PermanentError(550, "<ann@example.com> no such user"), "failed",
     sending.DELETED_WHILE_SENDING),
])
def test_the_outcome_for_a_contact_deleted_meanwhile_brings_nothing_back(
        tenant: Tenant, settings: Settings, answer: TransportError | None, status: str,
        error: str | None) -> None:
    _template(tenant)
    send_id = _queue(tenant)

    retry = deliver_send(send_id, settings=settings, transport=DeletingTransport(tenant, answer))

    stored = _send(send_id)
    assert (stored.status, stored.error, stored.email, retry) == (status, error, "", None)
    assert (stored.sent_at is not None) == (status == "sent")
    with db.transaction() as session:  # no system event, so no contact made again
        assert list(session.scalars(select(Contact.email))) == []
        assert list(session.scalars(select(Event.name))) == []


def test_a_provider_id_taken_inside_a_group_still_records_every_send(
        tenant: Tenant, settings: Settings) -> None:
    class SameId(ScriptedTransport):
        def send(self, message: OutgoingMessage) -> str | None:
            return "OK"

    _template(tenant)
    first, second = _queue(tenant), _queue(tenant, "bob@example.com")

    deliver_sends([first, second], settings=settings, transport=SameId())

    assert [(_send(s).status, _send(s).provider_message_id) for s in (first, second)] == [
        ("sent", "OK"), ("sent", None)]
    assert len(_events(tenant, "email.sent")) == 2


def test_groups_record_each_outcome_and_claim_in_order(tenant: Tenant,
                                                       settings: Settings) -> None:
    grouped = dataclasses.replace(settings, send_claim_group=3)
    _template(tenant)
    send_ids = [_queue(tenant, f"c{n}@example.com") for n in range(7)]
    transport = ScriptedTransport(None, TransientError(421, "busy"), None,
                                  PermanentError(550, "no such user"), None, None, None)

    retries = deliver_sends(send_ids, settings=grouped, transport=transport)

    statuses = [_send(send_id).status for send_id in send_ids]
    assert statuses == ["sent", "queued", "sent", "bounced", "sent", "sent", "sent"]
    assert set(retries) == {send_ids[1]}
    assert [message.send_id for message in transport.sent] == [
        send_ids[n] for n in (0, 2, 4, 5, 6)]
    assert sorted(event.properties["sendId"] for event in _events(tenant, "email.sent")) == sorted(
        send_ids[n] for n in (0, 2, 4, 5, 6))
    assert [event.properties["sendId"] for event in _events(tenant, "email.bounced")] == [
        send_ids[3]]
    assert _contact(tenant, "c3@example.com").suppressed

"""SES feedback without HTTP: a deleted contact's sends, and forgetting old dedupe rows."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import update

from app import db
from app.config import Settings
from app.config import celery_config
from app.models import Contact
from app.models import Event
from app.models import Send
from app.models import WebhookDelivery
from app.services import contacts
from app.services import feedback
from app.timeutil import utcnow
from tasks import retention as retention_tasks
from tests.api.test_webhooks_ses import EMAIL
from tests.api.test_webhooks_ses import bounce
from tests.api.test_webhooks_ses import complaint
from tests.api.test_webhooks_ses import delivery
from tests.api.test_webhooks_ses import make_send
from tests.conftest import Tenant


def _apply(delivery_id: str, notification: dict[str, object]) -> str:
    with db.transaction() as session:
        return feedback.apply_notification(session, delivery_id=delivery_id,
                                           message=json.dumps(notification))


def test_feedback_about_a_deleted_contacts_send_is_acknowledged_and_ignored(
        tenant: Tenant) -> None:
    send_id = make_send(tenant)
    with db.transaction() as session:
        contacts.delete_contact(session, tenant_id=tenant.id, ref=EMAIL)

    answers = [_apply(f"sns-{n}", notification) for n, notification in enumerate([
        delivery(), bounce("Permanent", diagnostic=f"smtp; 550 5.1.1 <{EMAIL}> unknown"),
        complaint()])]

    assert answers == ["contact_deleted"] * 3
    with db.transaction() as session:
        send = session.get(Send, send_id)
        assert send is not None
        assert (send.status, send.delivered_at, send.bounced_at, send.complained_at,
                send.error) == ("sent", None, None, None, None)
        assert list(session.scalars(select(Contact.email))) == []
        assert list(session.scalars(select(Event.name))) == []
    assert _apply("sns-0", delivery()) == "duplicate"  # still deduplicated


# --- purging the dedupe rows ---------------------------------------------------------------------


def _received(*ages: timedelta) -> None:
    now = utcnow()
    with db.transaction() as session:
        session.add_all(WebhookDelivery(provider="ses", message_id=f"msg-{n}",
                                        received_at=now - age) for n, age in enumerate(ages))


def _kept() -> list[str]:
    with db.transaction() as session:
        return sorted(session.scalars(select(WebhookDelivery.message_id)))


def test_purge_forgets_only_rows_past_the_window_in_batches() -> None:
    window = feedback.DEDUPE_WINDOW
    _received(*[window + timedelta(hours=n + 1) for n in range(5)],
              window - timedelta(hours=1), timedelta(0))

    with db.transaction() as session:
        assert feedback.purge_deliveries(session, batch_size=2) == 2
    assert retention_tasks.run_webhook_purge(batch_size=2) == 3
    assert retention_tasks.run_webhook_purge(batch_size=2) == 0  # idempotent

    assert _kept() == ["msg-5", "msg-6"]


def test_a_purged_message_id_is_applied_again_but_a_kept_one_is_not(tenant: Tenant) -> None:
    make_send(tenant)
    assert _apply("sns-old", delivery()) == "applied"
    with db.transaction() as session:
        session.execute(update(WebhookDelivery).values(
            received_at=utcnow() - feedback.DEDUPE_WINDOW - timedelta(minutes=1)))
    assert _apply("sns-new", delivery()) == "unchanged"

    assert retention_tasks.run_webhook_purge() == 1

    assert _kept() == ["sns-new"]
    assert _apply("sns-new", delivery()) == "duplicate"
    assert _apply("sns-old", delivery()) == "unchanged"  # processed again: delivered already


def test_beat_runs_the_purge_hourly_on_the_maintenance_queue(settings: Settings) -> None:
    schedule = celery_config(settings)["beat_schedule"]
    assert isinstance(schedule, dict)
    assert schedule["purge-webhook-deliveries"] == {"task": "webhooks.purge_deliveries",
                                                    "schedule": 3600.0}
    task = retention_tasks.purge_webhook_deliveries
    assert task.name == "webhooks.purge_deliveries" and task.queue == "maintenance"
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
    assert task.apply().get() == 0  # runs as a task (eagerly, here)

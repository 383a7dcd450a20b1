"""Transactional sending end to end: the API, a real worker, and a real SMTP server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from app import db
from app.models import Send
from app.services import sending
from app.services import tokens
from app.timeutil import utcnow
from tasks.sends import deliver
from tasks.sends import requeue_lost
from tests.conftest import Tenant
from tests.smtp_server import Received
from tests.smtp_server import SMTPServer
from tests.support import WorkerProcess
from tests.support import wait_for

PUBLIC_URL = "http://localhost:8000"
HTML = ("<html><body><h1>Hi {{ firstName | default: 'there' }}</h1>"
        "<p>Order {{ variables.orderId }}: <a href=\"https://shop.example/o?id={{ orderId }}&amp;"
        "ref=mail\">track it</a></p><p><a href=\"{{ unsubscribeUrl }}\">Unsubscribe</a></p>"
        "</body></html>")


@pytest.fixture(scope="module")
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def smtp_worker(stack_env: dict[str, str], smtp: SMTPServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker that sends through the test SMTP server, retrying fast (0.1 s, 0.2 s)."""
    env = {**stack_env, "EMAIL_TRANSPORT": "smtp", "SMTP_URL": smtp.url,
           "KRAITER_SEND_RETRY_BASE": "0.1", "KRAITER_SEND_MAX_ATTEMPTS": "3"}
    worker = WorkerProcess(env, tmp_path_factory.mktemp("send-worker") / "worker.log")
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(autouse=True)
def fresh_smtp(smtp: SMTPServer, smtp_worker: WorkerProcess) -> None:
    smtp.reset()


def _template(tenant: Tenant, template_id: str = "order", **fields: str) -> None:
    body = {"name": "Order", "subject": "Order {{ orderId }}, {{ firstName }}", "html": HTML,
            **fields}
    response = tenant.put(f"/api/templates/{template_id}", json=body)
    assert response.status_code in (200, 201), response.get_json()


def _send(tenant: Tenant, to: str = "ann@example.com", status: int = 202,
          headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    body.setdefault("templateId", "order")
    body.setdefault("variables", {"orderId": "A-17", "firstName": "Ann"})
    response = tenant.post("/api/send", json={"to": to, **body}, headers=headers or {})
    assert response.status_code == status, response.get_json()
    answer: dict[str, Any] = response.get_json()
    return answer


def _wait_status(tenant: Tenant, send_id: str, status: str) -> dict[str, Any]:
    def current() -> dict[str, Any] | None:
        item: dict[str, Any] = tenant.get(f"/api/sends/{send_id}").get_json()
        return item if item["status"] == status else None

    found = wait_for(current, timeout=20, message=f"send {send_id} to be {status}")
    assert found is not None
    return found


def _only_message(smtp: SMTPServer, send_id: str) -> Received:
    [received] = smtp.received_for(send_id)
    return received


def _events(tenant: Tenant, email: str, name: str) -> list[dict[str, Any]]:
    response = tenant.get("/api/events", query_string={"email": email, "event": name})
    items: list[dict[str, Any]] = response.get_json()["data"]
    return items


def _row(send_id: str) -> Send:
    with db.transaction() as session:
        send = session.get(Send, send_id)
        assert send is not None
        return send


# --- the happy path ------------------------------------------------------------------------------


def test_a_transactional_email_reaches_the_smtp_server(tenant: Tenant, smtp: SMTPServer,
                                                       app: Flask) -> None:
    _template(tenant)

    accepted = _send(tenant, "Ann@Example.COM")

    assert accepted == {"id": accepted["id"], "to": "Ann@example.com", "templateId": "order",
                        "status": "queued", "createdAt": accepted["createdAt"]}
    assert accepted["id"].startswith("snd_")
    send = _wait_status(tenant, accepted["id"], "sent")
    received = _only_message(smtp, accepted["id"])
    message = received.message
    assert received.rcpt_tos == ["Ann@example.com"]
    assert message["Subject"] == "Order A-17, Ann"
    assert re.fullmatch(r"<[^@>]+@localhost>", message["Message-ID"])
    assert message["X-Kraiter-Send-Id"] == accepted["id"]
    unsubscribe = re.fullmatch(rf"<{PUBLIC_URL}/unsubscribe/([\w.-]+)>",
                               message["List-Unsubscribe"])
    assert unsubscribe is not None
    keys = app.config["SETTINGS"].secret_keys
    assert tokens.read_token(keys, tokens.UNSUBSCRIBE, unsubscribe.group(1)) == [accepted["id"]]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = (part.get_content() for part in message.iter_parts())
    assert "Hi Ann" in text and "Order A-17" in text
    assert f'src="{PUBLIC_URL}/t/o/' in html
    assert "https://shop.example/o" not in html
    [click] = re.findall(rf'href="({PUBLIC_URL}/t/c/[^"]+)"', html)
    assert f'href="{PUBLIC_URL}/unsubscribe/{unsubscribe.group(1)}"' in html
    redirect = tenant.client.get(click.removeprefix(PUBLIC_URL))
    assert (redirect.status_code, redirect.headers["Location"]) == (
        302, "https://shop.example/o?id=A-17&ref=mail")

    assert send["subject"] == "Order A-17, Ann" and send["sentAt"] is not None
    assert (send["source"], send["sourceId"], send["contactId"]) == (
        "transactional", None, tenant.get("/api/contacts/Ann@example.com").get_json()["id"])
    assert _row(accepted["id"]).provider_message_id == received.queue_id
    [event] = _events(tenant, "Ann@example.com", "email.sent")
    assert event["properties"] == {"sendId": accepted["id"], "templateId": "order"}
    assert event["source"] == "system" and event["contactId"] == send["contactId"]


def test_template_is_an_alias_of_template_id(tenant: Tenant, smtp: SMTPServer) -> None:
    _template(tenant)

    accepted = _send(tenant, templateId=None, template="order")

    assert accepted["templateId"] == "order"
    _wait_status(tenant, accepted["id"], "sent")


# --- refusals at send time -----------------------------------------------------------------------


def test_a_5xx_refusal_is_a_hard_bounce_that_suppresses_the_contact(tenant: Tenant,
                                                                    smtp: SMTPServer) -> None:
    _template(tenant)
    smtp.refuse_recipient("gone@example.com", "550 5.1.1 <gone@example.com>: No such user")

    send_id = _send(tenant, "gone@example.com")["id"]

    send = _wait_status(tenant, send_id, "bounced")
    assert send["bounceType"] == "hard" and "550" in send["error"]
    assert tenant.get("/api/contacts/gone@example.com").get_json()["suppressed"] is True
    [event] = _events(tenant, "gone@example.com", "email.bounced")
    assert event["properties"]["bounceType"] == "hard"
    assert event["properties"]["sendId"] == send_id and "No such user" in \
        event["properties"]["reason"]
    assert smtp.received_for(send_id) == []
    refused = _send(tenant, "gone@example.com", status=422)
    assert refused["error"]["code"] == "UNPROCESSABLE_ENTITY"


def test_4xx_refusals_are_retried_then_become_a_soft_bounce(tenant: Tenant,
                                                            smtp: SMTPServer) -> None:
    _template(tenant)
    smtp.refuse_recipient("busy@example.com", "451 4.7.1 Greylisted, try again later")

    send_id = _send(tenant, "busy@example.com")["id"]

    send = _wait_status(tenant, send_id, "bounced")
    assert send["bounceType"] == "soft" and send["attempts"] == 3
    assert "gave up after 3 attempts" in send["error"]
    assert tenant.get("/api/contacts/busy@example.com").get_json()["suppressed"] is False
    [event] = _events(tenant, "busy@example.com", "email.bounced")
    assert event["properties"]["bounceType"] == "soft"


def test_a_4xx_then_success_sends_once(tenant: Tenant, smtp: SMTPServer) -> None:
    _template(tenant)
    smtp.refuse_recipient("slow@example.com", "452 4.2.2 Mailbox full", times=2)

    send_id = _send(tenant, "slow@example.com")["id"]

    assert _wait_status(tenant, send_id, "sent")["attempts"] == 3
    assert _only_message(smtp, send_id).accepted


# --- at most once --------------------------------------------------------------------------------


def test_a_task_delivered_three_times_sends_one_email(tenant: Tenant, smtp: SMTPServer,
                                                      smtp_worker: WorkerProcess) -> None:
    _template(tenant)

    send_id = _send(tenant)["id"]
    for _ in range(2):
        deliver.apply_async(args=(send_id,))

    _wait_status(tenant, send_id, "sent")
    wait_for(lambda: smtp_worker.log().count(f"send_not_claimed {send_id}") == 2,
             message="both duplicate tasks to run")
    assert len(smtp.received_for(send_id)) == 1
    assert len(_events(tenant, "ann@example.com", "email.sent")) == 1


def test_an_idempotency_key_replays_the_first_answer(tenant: Tenant, smtp: SMTPServer) -> None:
    _template(tenant)
    headers = {"Idempotency-Key": "order-A-17-confirmation"}

    first = _send(tenant, headers=headers)
    second = tenant.post("/api/send", headers=headers, json={
        "to": "ann@example.com", "templateId": "order",
        "variables": {"orderId": "A-17", "firstName": "Ann"}})

    assert second.status_code == 202 and second.get_json() == first
    _wait_status(tenant, first["id"], "sent")
    assert len(tenant.get("/api/sends").get_json()["data"]) == 1
    assert len(smtp.received_for(first["id"])) == 1


def test_a_queued_send_whose_task_was_lost_is_sent_by_the_sweep(tenant: Tenant, app: Flask,
                                                                smtp: SMTPServer) -> None:
    _template(tenant)
    contact_id = tenant.post("/api/contacts", json={"email": "lost@example.com"}).get_json()["id"]
    with db.transaction() as session:
        send_id = sending.create_send(session, tenant_id=tenant.id, contact_id=contact_id,
                                      email="lost@example.com", template_id="order").id
    with db.transaction() as session:  # queued two minutes ago, and never enqueued
        session.execute(update(Send).where(Send.id == send_id)
                        .values(updated_at=utcnow().replace(year=2020)))

    with app.app_context():
        assert requeue_lost() == 1

    _wait_status(tenant, send_id, "sent")
    assert len(smtp.received_for(send_id)) == 1


# --- refusals at the API -------------------------------------------------------------------------


def test_suppressed_and_unsubscribed_contacts_get_422(tenant: Tenant, smtp: SMTPServer) -> None:
    _template(tenant)
    tenant.post("/api/contacts", json={"email": "quiet@example.com", "subscribed": False})

    refused = _send(tenant, "quiet@example.com", status=422)
    assert "ignoreUnsubscribe" in refused["error"]["message"]
    send_id = _send(tenant, "quiet@example.com", ignoreUnsubscribe=True)["id"]

    _wait_status(tenant, send_id, "sent")
    assert len(smtp.received_for(send_id)) == 1


def test_an_unknown_template_is_a_404(tenant: Tenant) -> None:
    answer = _send(tenant, templateId="nope", status=404)

    assert answer["error"]["code"] == "NOT_FOUND"
    assert tenant.get("/api/contacts/ann@example.com").status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"templateId": "order"}, "to"),
    ({"to": "not-an-email", "templateId": "order"}, "to"),
    ({"to": "ann@example.com"}, "templateId"),
    ({"to": "ann@example.com", "templateId": 7}, "templateId"),
    ({"to": "ann@example.com", "templateId": "order", "variables": [1]}, "variables"),
    ({"to": "ann@example.com", "templateId": "order", "variables": {"a": ["\u0000"]}},
     "variables"),
    ({"to": "ann@example.com", "templateId": "order", "ignoreUnsubscribe": "yes"},
     "ignoreUnsubscribe"),
    ({"to": "ann@example.com", "templateId": "order", "cc": "x@example.com"}, "cc"),
])
def test_invalid_bodies_are_400(tenant: Tenant, body: dict[str, Any], field: str) -> None:
    response = tenant.post("/api/send", json=body)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and field in error["details"]


def test_nested_variables_reach_the_template(tenant: Tenant, smtp: SMTPServer) -> None:
    _template(tenant, "items", html="<ul>{% for item in variables.items %}<li>{{ item.name }} x"
                                    "{{ item.qty }}</li>{% endfor %}</ul>")

    send_id = _send(tenant, templateId="items", variables={
        "orderId": 1, "firstName": "Ann", "items": [{"name": "Tea", "qty": 2}]})["id"]

    _wait_status(tenant, send_id, "sent")
    _text, html = (p.get_content() for p in _only_message(smtp, send_id).message.iter_parts())
    assert "<li>Tea x2</li>" in html


# --- listing and tenants -------------------------------------------------------------------------


def test_sends_are_listed_newest_first_with_filters(tenant: Tenant, smtp: SMTPServer) -> None:
    _template(tenant)
    _template(tenant, "receipt")
    ids = [_send(tenant, "ann@example.com")["id"], _send(tenant, "bob@example.com")["id"],
           _send(tenant, "ann@example.com", templateId="receipt")["id"]]
    for send_id in ids:
        _wait_status(tenant, send_id, "sent")
    ann = tenant.get("/api/contacts/ann@example.com").get_json()["id"]

    def listed(**query: Any) -> list[str]:
        response = tenant.get("/api/sends", query_string=query)
        assert response.status_code == 200, response.get_json()
        return [item["id"] for item in response.get_json()["data"]]

    assert listed() == ids[::-1]
    assert listed(templateId="receipt") == [ids[2]]
    assert listed(contactId=ann) == [ids[2], ids[0]]
    assert listed(contactId="ann@example.com") == [ids[2], ids[0]]
    assert listed(status="sent") == ids[::-1]
    assert listed(status="bounced") == []
    first = tenant.get("/api/sends?limit=2").get_json()
    second = tenant.get("/api/sends", query_string={"limit": 2, "cursor": first["nextCursor"]})
    assert [i["id"] for i in first["data"]] + [i["id"] for i in second.get_json()["data"]] == \
        ids[::-1]
    assert second.get_json()["nextCursor"] is None
    assert tenant.get("/api/sends?status=sending").status_code == 400
    assert tenant.get("/api/sends?contactId=cnt_nobody").status_code == 404
    item = tenant.get(f"/api/sends/{ids[1]}").get_json()
    assert set(item) >= {"id", "contactId", "email", "templateId", "subject", "status", "source",
                         "sourceId", "sentAt", "deliveredAt", "openedAt", "clickedAt"}
    assert (item["email"], item["deliveredAt"], item["openedAt"]) == (
        "bob@example.com", None, None)


def test_a_claimed_send_is_shown_as_queued(tenant: Tenant) -> None:
    _template(tenant)
    contact_id = tenant.post("/api/contacts", json={"email": "cara@example.com"}).get_json()["id"]
    with db.transaction() as session:  # never enqueued, so no worker touches it
        send_id = sending.create_send(session, tenant_id=tenant.id, contact_id=contact_id,
                                      email="cara@example.com", template_id="order").id
        session.execute(update(Send).where(Send.id == send_id).values(status="sending"))

    assert tenant.get(f"/api/sends/{send_id}").get_json()["status"] == "queued"
    assert [i["id"] for i in tenant.get("/api/sends?status=queued").get_json()["data"]] == [
        send_id]


def test_tenants_never_see_each_others_sends(tenant: Tenant, other_tenant: Tenant,
                                             smtp: SMTPServer) -> None:
    _template(tenant)
    send_id = _send(tenant)["id"]

    assert other_tenant.get(f"/api/sends/{send_id}").status_code == 404
    assert other_tenant.get("/api/sends").get_json()["data"] == []
    assert _send(other_tenant, status=404)["error"]["code"] == "NOT_FOUND"
    assert tenant.get("/api/sends/snd_unknown").status_code == 404
    _wait_status(tenant, send_id, "sent")


"""POST /webhooks/ses: SES feedback through SNS, signed with a throwaway key made in the tests.

The app trusts the test certificate through its certificate cache, seeded for the AWS-style URL
the messages name; no test reaches the network. Subscription confirmation uses a local HTTP
server, allowed through SES_SNS_TRUSTED_HOSTS in those tests only.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func
from sqlalchemy import select

from app import db
from app.ids import new_id
from app.models import Send
from app.models import WebhookDelivery
from app.services import ingest
from app.services import sns
from app.timeutil import utcnow
from tests.conftest import Tenant
from tests.services.test_sns import CERT_URL
from tests.services.test_sns import TOPIC
from tests.services.test_sns import envelope
from tests.services.test_sns import sign
from tests.services.test_sns import signing_key

EMAIL = "ada@example.com"
SES_ID = "0100018e1a2b3c4d-5e6f7a8b-0000-4000-8000-000000000000-000000"
SES_TIME = "2026-03-01T11:59:58.123Z"


@pytest.fixture(autouse=True)
def trusted_test_certificate() -> Iterator[None]:
    """The test certificate is what SNS serves at CERT_URL, as far as the app knows."""
    sns.certificates.add(CERT_URL, signing_key().pem)
    yield
    sns.certificates.clear()


def _configure(app: Flask, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> None:
    settings = app.config["SETTINGS"]
    monkeypatch.setitem(app.config, "SETTINGS", dataclasses.replace(settings, **changes))


@pytest.fixture(autouse=True)
def our_topic_only(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(app, monkeypatch, ses_sns_topic_arns=(TOPIC,))


def make_send(tenant: Tenant, *, email: str = EMAIL, provider_message_id: str | None = SES_ID
              ) -> str:
    """A send the transport has handed to SES (status `sent`)."""
    with db.transaction() as session:
        contact_id = ingest.upsert_contacts(session, tenant_id=tenant.id, emails=[email])[email]
        now = utcnow()
        send = Send(id=new_id("snd"), tenant_id=tenant.id, contact_id=contact_id, email=email,
                    template_id="welcome", template_version=1, subject="Welcome",
                    status="sent", source="transactional", variables={}, context={}, links=[],
                    provider_message_id=provider_message_id, attempts=1, sent_at=now,
                    created_at=now, updated_at=now)
        session.add(send)
    return send.id


def stored_send(send_id: str) -> Send:
    with db.transaction() as session:
        send = session.get(Send, send_id)
        assert send is not None
        return send


def mail(*, message_id: str = SES_ID, send_id: str | None = None) -> dict[str, Any]:
    """The SES `mail` object, with our X-Kraiter-Send-Id header when `send_id` is given."""
    headers = [{"name": "From", "value": "Acme <hello@acme.test>"},
               {"name": "To", "value": EMAIL}]
    if send_id is not None:
        headers.append({"name": "X-Kraiter-Send-Id", "value": send_id})
    return {"timestamp": "2026-03-01T11:59:57.000Z", "messageId": message_id,
            "source": "hello@acme.test", "destination": [EMAIL], "headersTruncated": False,
            "headers": headers, "commonHeaders": {"from": ["hello@acme.test"], "to": [EMAIL]}}


def delivery(**mail_args: Any) -> dict[str, Any]:
    return {"notificationType": "Delivery", "mail": mail(**mail_args),
            "delivery": {"timestamp": SES_TIME, "recipients": [EMAIL],
                         "smtpResponse": "250 2.6.0 Message received",
                         "processingTimeMillis": 546, "reportingMTA": "a8-70.smtp-out.ses"}}


def bounce(bounce_type: str, sub_type: str = "General", *,
           diagnostic: str | None = "smtp; 550 5.1.1 user unknown",
           recipients: list[str] | None = None) -> dict[str, Any]:
    bounced = [{"emailAddress": address, "action": "failed", "status": "5.1.1",
                **({"diagnosticCode": diagnostic} if diagnostic else {})}
               for address in ([EMAIL] if recipients is None else recipients)]
    return {"notificationType": "Bounce", "mail": mail(),
            "bounce": {"bounceType": bounce_type, "bounceSubType": sub_type,
                       "bouncedRecipients": bounced, "timestamp": SES_TIME,
                       "feedbackId": "0100-bounce", "reportingMTA": "dsn; a8-70.smtp-out.ses"}}


def complaint() -> dict[str, Any]:
    return {"notificationType": "Complaint", "mail": mail(),
            "complaint": {"complainedRecipients": [{"emailAddress": EMAIL}],
                          "timestamp": "2026-03-01T12:05:00.000Z", "feedbackId": "0100-complaint",
                          "complaintFeedbackType": "abuse", "userAgent": "Yahoo!-Mail-Feedback"}}


def notification(ses: dict[str, Any], *, version: str = "2", **envelope_args: Any
                 ) -> dict[str, Any]:
    """A signed SNS Notification carrying an SES notification."""
    return sign(envelope(json.dumps(ses), **envelope_args), version=version)


def post(client: FlaskClient, message: dict[str, Any] | bytes) -> Any:
    """POST as SNS does: JSON labelled text/plain, with the x-amz-sns-* headers."""
    if isinstance(message, bytes):
        return client.post("/webhooks/ses", data=message, content_type="text/plain")
    return client.post("/webhooks/ses", data=json.dumps(message),
                       content_type="text/plain; charset=UTF-8",
                       headers={"x-amz-sns-message-type": message["Type"],
                                "x-amz-sns-message-id": message["MessageId"]})


def events_of(tenant: Tenant, email: str = EMAIL) -> list[dict[str, Any]]:
    return tenant.get(f"/api/events?email={email}").get_json()["data"]


def suppressed(tenant: Tenant, email: str = EMAIL) -> bool:
    return bool(tenant.get(f"/api/contacts/{email}").get_json()["suppressed"])


def assert_untouched(tenant: Tenant, send_id: str) -> None:
    send = stored_send(send_id)
    assert (send.status, send.delivered_at, send.bounced_at, send.complained_at) == (
        "sent", None, None, None)
    assert events_of(tenant) == []
    assert not suppressed(tenant)


@pytest.mark.parametrize("version", ["1", "2"])
def test_delivery_marks_the_send_delivered(client: FlaskClient, tenant: Tenant,
                                           version: str) -> None:
    send_id = make_send(tenant)

    response = post(client, notification(delivery(), version=version))

    assert response.status_code == 200
    send = stored_send(send_id)
    assert send.status == "delivered"
    assert send.delivered_at is not None and send.delivered_at.isoformat() == (
        "2026-03-01T11:59:58.123000+00:00")
    [event] = events_of(tenant)
    assert event["event"] == "email.delivered"
    assert event["source"] == "system"
    assert event["timestamp"] == SES_TIME
    assert event["properties"] == {"sendId": send_id, "templateId": "welcome"}
    assert not suppressed(tenant)


def test_configuration_set_events_use_event_type(client: FlaskClient, tenant: Tenant) -> None:
    send_id = make_send(tenant)
    ses = delivery()
    ses["eventType"] = ses.pop("notificationType")

    assert post(client, notification(ses)).status_code == 200

    assert stored_send(send_id).status == "delivered"


@pytest.mark.parametrize("version", ["1", "2"])
def test_permanent_bounce_is_hard_and_suppresses_the_contact(client: FlaskClient, tenant: Tenant,
                                                             version: str) -> None:
    send_id = make_send(tenant)

    response = post(client, notification(bounce("Permanent"), version=version))

    assert response.status_code == 200
    send = stored_send(send_id)
    assert (send.status, send.bounce_type) == ("bounced", "hard")
    assert send.bounced_at is not None
    [event] = events_of(tenant)
    assert event["event"] == "email.bounced"
    assert event["properties"] == {"sendId": send_id, "templateId": "welcome",
                                   "bounceType": "hard",
                                   "reason": "smtp; 550 5.1.1 user unknown"}
    assert suppressed(tenant)


def test_without_a_diagnostic_code_the_reason_is_the_sub_type(client: FlaskClient,
                                                              tenant: Tenant) -> None:
    make_send(tenant)

    post(client, notification(bounce("Permanent", "OnAccountSuppressionList", diagnostic=None)))

    [event] = events_of(tenant)
    assert event["properties"]["reason"] == "OnAccountSuppressionList"
    assert event["properties"]["bounceType"] == "hard"


@pytest.mark.parametrize("bounce_type", ["Transient", "Undetermined"])
def test_other_bounces_are_soft_and_keep_the_contact(client: FlaskClient, tenant: Tenant,
                                                     bounce_type: str) -> None:
    send_id = make_send(tenant)

    response = post(client, notification(
        bounce(bounce_type, "MailboxFull", diagnostic="smtp; 452 4.2.2 mailbox full")))

    assert response.status_code == 200
    send = stored_send(send_id)
    assert (send.status, send.bounce_type) == ("bounced", "soft")
    [event] = events_of(tenant)
    assert event["properties"]["bounceType"] == "soft"
    assert event["properties"]["reason"] == "smtp; 452 4.2.2 mailbox full"
    assert not suppressed(tenant)


def test_a_bounce_without_recipients_changes_nothing(client: FlaskClient, tenant: Tenant) -> None:
    # What SES sends for an out-of-office reply in production.
    send_id = make_send(tenant)

    response = post(client, notification(bounce("Undetermined", "Undetermined", recipients=[])))

    assert response.status_code == 200
    assert_untouched(tenant, send_id)


def test_complaint_suppresses_the_contact(client: FlaskClient, tenant: Tenant) -> None:
    send_id = make_send(tenant)
    post(client, notification(delivery(), message_id="sns-delivery"))

    response = post(client, notification(complaint(), message_id="sns-complaint"))

    assert response.status_code == 200
    send = stored_send(send_id)
    assert send.status == "complained"
    assert send.complained_at is not None and send.delivered_at is not None
    assert [e["event"] for e in events_of(tenant)] == ["email.complained", "email.delivered"]
    assert events_of(tenant)[0]["properties"] == {"sendId": send_id, "templateId": "welcome"}
    assert suppressed(tenant)


def test_the_send_header_is_used_when_the_ses_id_is_unknown(client: FlaskClient,
                                                            tenant: Tenant) -> None:
    send_id = make_send(tenant, provider_message_id=None)

    post(client, notification(delivery(message_id="not-stored", send_id=send_id)))

    assert stored_send(send_id).status == "delivered"


def test_feedback_for_an_unknown_send_is_acknowledged_and_ignored(client: FlaskClient,
                                                                  tenant: Tenant) -> None:
    send_id = make_send(tenant)

    response = post(client, notification(bounce("Permanent") | {"mail": mail(message_id="x")}))

    assert response.status_code == 200
    assert_untouched(tenant, send_id)


@pytest.mark.parametrize("ses", [
    {"eventType": "Open", "mail": mail(), "open": {"timestamp": SES_TIME}},
    {"eventType": "Reject", "mail": mail(), "reject": {"reason": "Bad content"}},
    {"notificationType": "Received", "mail": mail()},
    {"notificationType": "bounce", "mail": mail()},
    {"mail": mail()},
    "not an SES notification",
])
def test_unknown_notifications_are_acknowledged_and_ignored(client: FlaskClient, tenant: Tenant,
                                                            ses: Any) -> None:
    send_id = make_send(tenant)
    message = ses if isinstance(ses, str) else json.dumps(ses)

    response = post(client, sign(envelope(message)))

    assert response.status_code == 200
    assert_untouched(tenant, send_id)


def test_a_tampered_message_is_forbidden_and_changes_nothing(client: FlaskClient,
                                                             tenant: Tenant) -> None:
    send_id = make_send(tenant)
    message = notification(bounce("Transient"))
    message["Message"] = json.dumps(bounce("Permanent"))

    response = post(client, message)

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "FORBIDDEN"
    assert_untouched(tenant, send_id)


def test_a_topic_off_the_allow_list_is_forbidden(client: FlaskClient, tenant: Tenant) -> None:
    send_id = make_send(tenant)

    response = post(client, notification(
        complaint(), topic="arn:aws:sns:us-east-1:999999999999:someone-elses-topic"))

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "FORBIDDEN"
    assert_untouched(tenant, send_id)


def test_without_an_allow_list_any_topic_is_accepted(app: Flask, client: FlaskClient,
                                                     tenant: Tenant,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(app, monkeypatch, ses_sns_topic_arns=())
    send_id = make_send(tenant)

    response = post(client, notification(delivery(), topic="arn:aws:sns:eu-west-1:1:other"))

    assert response.status_code == 200
    assert stored_send(send_id).status == "delivered"


def test_a_duplicate_message_id_is_processed_once(client: FlaskClient, tenant: Tenant) -> None:
    send_id = make_send(tenant)
    first = notification(delivery(), message_id="sns-retried")

    answers = [post(client, first) for _ in range(3)]
    # A different notification reusing the id is also a duplicate: the id is the dedupe key.
    reused = post(client, notification(bounce("Permanent"), message_id="sns-retried"))

    assert [a.status_code for a in answers] + [reused.status_code] == [200, 200, 200, 200]
    assert [a.get_json()["status"] for a in answers] == ["applied", "duplicate", "duplicate"]
    assert stored_send(send_id).status == "delivered"
    assert [e["event"] for e in events_of(tenant)] == ["email.delivered"]
    assert not suppressed(tenant)
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1


def test_a_repeated_outcome_under_a_new_message_id_is_recorded_once(client: FlaskClient,
                                                                    tenant: Tenant) -> None:
    make_send(tenant)

    post(client, notification(bounce("Permanent"), message_id="first"))
    second = post(client, notification(bounce("Permanent"), message_id="second"))

    assert second.status_code == 200
    assert [e["event"] for e in events_of(tenant)] == ["email.bounced"]


@pytest.mark.parametrize("body", [
    b"",
    b"{not json",
    b'["Notification"]',
    json.dumps({"Type": "Notification", "MessageId": "m"}).encode(),
    json.dumps({"Type": "Gossip", "Message": "{}"}).encode(),
])
def test_malformed_payloads_are_bad_requests(client: FlaskClient, body: bytes) -> None:
    response = post(client, body)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"


@dataclass
class LocalServer:
    """An HTTP server on 127.0.0.1 that serves the test certificate and records each GET."""

    origin: str
    hits: list[str]


@pytest.fixture
def local_server() -> Iterator[LocalServer]:
    hits: list[str] = []
    pem = signing_key().pem

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = pem if self.path == "/cert.pem" else b"<ConfirmSubscriptionResponse/>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LocalServer(f"http://127.0.0.1:{server.server_address[1]}", hits)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def confirmation(origin: str, *, cert_url: str | None = None, attempt: str = "one"
                 ) -> dict[str, Any]:
    """A signed SubscriptionConfirmation whose SubscribeURL is on the local server."""
    return sign(envelope(
        "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL.",
        kind="SubscriptionConfirmation", message_id=f"confirm-{attempt}", Token=attempt,
        cert_url=cert_url or f"{origin}/cert.pem",
        SubscribeURL=f"{origin}/?Action=ConfirmSubscription&Token={attempt}"))


def test_a_certificate_on_another_host_is_forbidden_without_fetching(
        client: FlaskClient, tenant: Tenant, local_server: LocalServer) -> None:
    # Signed by the very key the local server would serve: only the host check stands in the way.
    send_id = make_send(tenant)
    message = notification(delivery(), cert_url=f"{local_server.origin}/cert.pem")

    response = post(client, message)

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "FORBIDDEN"
    assert local_server.hits == []
    assert_untouched(tenant, send_id)


def test_subscription_confirmation_visits_the_subscribe_url(
        app: Flask, client: FlaskClient, local_server: LocalServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(app, monkeypatch, ses_sns_trusted_hosts=(local_server.origin,))

    first = post(client, confirmation(local_server.origin, attempt="one"))
    second = post(client, confirmation(local_server.origin, attempt="two"))

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.get_json() == {"status": "confirmed"}
    # The certificate is fetched once and cached; each SubscribeURL is visited.
    assert local_server.hits == ["/cert.pem", "/?Action=ConfirmSubscription&Token=one",
                                 "/?Action=ConfirmSubscription&Token=two"]


def test_a_subscribe_url_off_the_signing_host_is_not_visited(
        client: FlaskClient, local_server: LocalServer) -> None:
    # Validly signed by the (seeded) AWS certificate, but pointing elsewhere.
    response = post(client, confirmation(local_server.origin, cert_url=CERT_URL))

    assert response.status_code == 403
    assert local_server.hits == []


def test_a_confirmation_from_another_topic_is_not_visited(
        app: Flask, client: FlaskClient, local_server: LocalServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(app, monkeypatch, ses_sns_trusted_hosts=(local_server.origin,),
               ses_sns_topic_arns=("arn:aws:sns:us-east-1:123456789012:only-this-one",))

    response = post(client, confirmation(local_server.origin))

    assert response.status_code == 403
    assert local_server.hits == []

"""Unsubscribe: a confirmation page on GET, the change on POST (RFC 8058 one-click)."""

from __future__ import annotations

import dataclasses
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app.services import tokens
from tests.api.test_sequences import API_ONLY
from tests.api.test_sequences import active_sequence
from tests.api.tracking_support import all_events
from tests.api.tracking_support import insert_send
from tests.api.tracking_support import stored_send
from tests.api.tracking_support import system_events
from tests.api.tracking_support import token
from tests.conftest import Tenant


def _contact(tenant: Tenant, email: str) -> dict[str, Any]:
    response = tenant.get(f"/api/contacts/{email}")
    assert response.status_code == 200, response.get_json()
    contact: dict[str, Any] = response.get_json()
    return contact


def _assert_page(response: TestResponse, status: int, heading: str) -> str:
    assert response.status_code == status
    assert response.mimetype == "text/html"
    assert "Location" not in response.headers
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    assert heading in page
    assert '<meta name="viewport"' in page
    # Self-contained: nothing is loaded from anywhere.
    assert not re.search(r"""(src|href)\s*=|<script|<link|@import|url\(""", page)
    return page


def test_get_shows_a_confirmation_form_and_changes_nothing(app: Flask, client: FlaskClient,
                                                          tenant: Tenant) -> None:
    mail = insert_send(tenant)
    unsubscribe_token = token(app, tokens.UNSUBSCRIBE, [mail.id])

    response = client.get(f"/unsubscribe/{unsubscribe_token}")
    client.get(f"/unsubscribe/{unsubscribe_token}")  # a link scanner comes by again

    page = _assert_page(response, 200, "Unsubscribe from these e-mails?")
    assert f'<form method="post" action="/unsubscribe/{unsubscribe_token}">' in page
    assert '<button type="submit">Unsubscribe</button>' in page
    assert _contact(tenant, mail.email)["unsubscribed"] is False
    assert all_events(tenant) == []
    assert stored_send(mail.id).unsubscribed_at is None


def test_post_unsubscribes_once_and_answers_200_every_time(app: Flask, client: FlaskClient,
                                                          tenant: Tenant) -> None:
    mail = insert_send(tenant)
    url = f"/unsubscribe/{token(app, tokens.UNSUBSCRIBE, [mail.id])}"

    first = client.post(url, data={"List-Unsubscribe": "One-Click"})  # the page's own form
    second = client.post(url, data={"List-Unsubscribe": "One-Click"})

    _assert_page(first, 200, "You're unsubscribed")
    _assert_page(second, 200, "You're unsubscribed")
    contact = _contact(tenant, mail.email)
    assert contact["unsubscribed"] is True
    assert contact["subscribed"] is False
    [event] = system_events(tenant, mail.email, "email.unsubscribed")
    assert event["source"] == "system"
    assert event["contactId"] == mail.contact_id
    assert event["properties"] == {"sendId": mail.id, "templateId": "welcome"}
    assert stored_send(mail.id).unsubscribed_at is not None
    _assert_page(client.get(url), 200, "You're already unsubscribed")


@pytest.mark.parametrize(("body", "content_type"), [
    pytest.param("List-Unsubscribe=One-Click", "application/x-www-form-urlencoded",
                  id="form-urlencoded"),
    pytest.param({"List-Unsubscribe": "One-Click"}, "multipart/form-data", id="multipart"),
    pytest.param(None, None, id="empty-body"),
])
def test_one_click_post_bodies_are_accepted(app: Flask, client: FlaskClient, tenant: Tenant,
                                           body: Any, content_type: str | None) -> None:
    mail = insert_send(tenant)
    url = f"/unsubscribe/{token(app, tokens.UNSUBSCRIBE, [mail.id])}"

    response = client.post(url, data=body, content_type=content_type)

    _assert_page(response, 200, "You're unsubscribed")
    assert _contact(tenant, mail.email)["unsubscribed"] is True
    assert len(system_events(tenant, mail.email, "email.unsubscribed")) == 1


def test_post_needs_no_cookies_or_credentials_and_ignores_them(
        app: Flask, client: FlaskClient, tenant: Tenant) -> None:
    mail = insert_send(tenant)
    url = f"/unsubscribe/{token(app, tokens.UNSUBSCRIBE, [mail.id])}"

    response = client.post(url, data="List-Unsubscribe=One-Click",
                           content_type="application/x-www-form-urlencoded",
                           headers={"Authorization": "Bearer kr_not_a_key",
                                    "Cookie": "session=whatever"})

    _assert_page(response, 200, "You're unsubscribed")
    assert _contact(tenant, mail.email)["unsubscribed"] is True


def test_unsubscribing_from_one_mail_covers_the_contact(app: Flask, client: FlaskClient,
                                                       tenant: Tenant) -> None:
    first = insert_send(tenant)
    second = insert_send(tenant, template_id="newsletter")

    client.post(f"/unsubscribe/{token(app, tokens.UNSUBSCRIBE, [first.id])}")
    response = client.post(f"/unsubscribe/{token(app, tokens.UNSUBSCRIBE, [second.id])}")

    _assert_page(response, 200, "You're unsubscribed")
    assert len(system_events(tenant, first.email, "email.unsubscribed")) == 1


@pytest.mark.parametrize("method", ["get", "post"])
def test_bad_tokens_get_a_404_page_and_change_nothing(app: Flask, client: FlaskClient,
                                                     tenant: Tenant, method: str) -> None:
    mail = insert_send(tenant)
    good = token(app, tokens.UNSUBSCRIBE, [mail.id])

    for bad in ("garbage", good[:-1], good.replace(".", ".x"),
                token(app, tokens.OPEN, [mail.id]), token(app, tokens.CLICK, [mail.id, 0]),
                token(app, tokens.UNSUBSCRIBE, ["snd_unknown"]),
                token(app, tokens.UNSUBSCRIBE, [mail.id, 0]),
                token(app, tokens.UNSUBSCRIBE, [mail.id], keys=("someone-elses-key",))):
        response = getattr(client, method)(f"/unsubscribe/{bad}")
        _assert_page(response, 404, "This link does not work")

    assert _contact(tenant, mail.email)["unsubscribed"] is False
    assert all_events(tenant) == []


def test_a_deleted_contact_is_not_brought_back(app: Flask, client: FlaskClient,
                                              tenant: Tenant) -> None:
    mail = insert_send(tenant)
    url = f"/unsubscribe/{token(app, tokens.UNSUBSCRIBE, [mail.id])}"
    assert tenant.delete(f"/api/contacts/{mail.email}").status_code == 204

    _assert_page(client.get(url), 200, "You're already unsubscribed")
    _assert_page(client.post(url), 200, "You're unsubscribed")

    assert tenant.get(f"/api/contacts/{mail.email}").status_code == 404
    assert all_events(tenant) == []


def test_key_rotation_keeps_old_links_working_until_the_key_is_retired(
        app: Flask, client: FlaskClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    mail = insert_send(tenant)
    settings = app.config["SETTINGS"]
    url = f"/unsubscribe/{token(app, tokens.UNSUBSCRIBE, [mail.id])}"

    monkeypatch.setitem(app.config, "SETTINGS", dataclasses.replace(
        settings, secret_keys=("brand-new-key",)))
    _assert_page(client.post(url), 404, "This link does not work")
    assert _contact(tenant, mail.email)["unsubscribed"] is False

    monkeypatch.setitem(app.config, "SETTINGS", dataclasses.replace(
        settings, secret_keys=("brand-new-key", *settings.secret_keys)))
    _assert_page(client.get(url), 200, "Unsubscribe from these e-mails?")
    _assert_page(client.post(url), 200, "You're unsubscribed")
    assert _contact(tenant, mail.email)["unsubscribed"] is True


def test_concurrent_posts_record_one_unsubscribe(app: Flask, tenant: Tenant) -> None:
    mail = insert_send(tenant)
    url = f"/unsubscribe/{token(app, tokens.UNSUBSCRIBE, [mail.id])}"
    start = threading.Barrier(6)

    def one_click() -> int:
        start.wait()
        status: int = app.test_client().post(url, data="List-Unsubscribe=One-Click").status_code
        return status

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda _: one_click(), range(6)))

    assert statuses == [200] * 6
    assert len(system_events(tenant, mail.email, "email.unsubscribed")) == 1


def test_one_click_unsubscribe_ends_the_contacts_enrolments_at_once(
        app: Flask, client: FlaskClient, tenant: Tenant) -> None:
    active_sequence(tenant, "onboarding", API_ONLY, ("welcome", "tips"))
    enrolled = tenant.post("/api/sequences/onboarding/enrolments",
                           json={"email": "reader@example.com"}).get_json()
    assert enrolled["status"] == "active" and enrolled["nextStepAt"] is not None
    mail = insert_send(tenant)

    client.post(f"/unsubscribe/{token(app, tokens.UNSUBSCRIBE, [mail.id])}")

    [enrolment] = tenant.get("/api/sequences/onboarding/enrolments").get_json()["data"]
    assert (enrolment["status"], enrolment["exitReason"], enrolment["nextStepAt"]) == (
        "exited", "unsubscribed", None)
    assert tenant.get("/api/scheduled").get_json()["data"] == []

"""The open pixel and click redirect (contract §6 public endpoints), on a stored sent e-mail."""

from __future__ import annotations

import base64
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app import db
from app.models import Contact
from app.services import tokens
from tests.api.tracking_support import LINKS
from tests.api.tracking_support import all_events
from tests.api.tracking_support import insert_send
from tests.api.tracking_support import stored_send
from tests.api.tracking_support import system_events
from tests.api.tracking_support import token
from tests.conftest import Tenant

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")


def _assert_pixel(response: TestResponse) -> None:
    assert response.status_code == 200
    assert response.data == GIF
    assert len(response.data) == 43
    assert response.headers["Content-Type"] == "image/gif"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers


def _assert_not_found_page(response: TestResponse) -> None:
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Location" not in response.headers
    assert "This link does not work" in response.get_data(as_text=True)


# -- open pixel ------------------------------------------------------------------------------

def test_pixel_records_each_open_as_a_system_event(app: Flask, client: FlaskClient,
                                                   tenant: Tenant) -> None:
    mail = insert_send(tenant)
    open_token = token(app, tokens.OPEN, [mail.id])

    _assert_pixel(client.get(f"/t/o/{open_token}"))
    first_opened_at = stored_send(mail.id).opened_at
    _assert_pixel(client.get(f"/t/o/{open_token}"))

    opens = system_events(tenant, mail.email, "email.opened")
    assert len(opens) == 2
    for item in opens:
        assert item["source"] == "system"
        assert item["contactId"] == mail.contact_id
        assert item["properties"] == {"sendId": mail.id, "templateId": "welcome"}
    assert first_opened_at is not None
    assert stored_send(mail.id).opened_at == first_opened_at  # openedAt keeps the first open


def test_pixel_for_a_bad_token_is_still_a_gif_and_records_nothing(
        app: Flask, client: FlaskClient, tenant: Tenant) -> None:
    mail = insert_send(tenant)
    good = token(app, tokens.OPEN, [mail.id])
    payload, signature = good.split(".")
    forged_payload = base64.urlsafe_b64encode(b'["snd_other"]').decode().rstrip("=")

    for bad in ("garbage", good[:-2], f"{payload}.{signature[::-1]}",
                f"{forged_payload}.{signature}", token(app, tokens.OPEN, ["snd_unknown"]),
                token(app, tokens.OPEN, [mail.id], keys=("someone-elses-key",)),
                token(app, tokens.CLICK, [mail.id, 0]),
                token(app, tokens.UNSUBSCRIBE, [mail.id])):
        _assert_pixel(client.get(f"/t/o/{bad}"))

    assert all_events(tenant) == []
    assert stored_send(mail.id).opened_at is None


def test_pixel_head_records_nothing(app: Flask, client: FlaskClient, tenant: Tenant) -> None:
    mail = insert_send(tenant)

    response = client.head(f"/t/o/{token(app, tokens.OPEN, [mail.id])}")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/gif"
    assert response.headers["Cache-Control"] == "no-store"
    assert all_events(tenant) == []
    assert stored_send(mail.id).opened_at is None


def test_sequence_send_events_carry_the_sequence(app: Flask, client: FlaskClient,
                                                tenant: Tenant) -> None:
    mail = insert_send(tenant, source="sequence", source_id="onboarding",
                       enrolment_id="enr_1", step_index=0, template_id="day-1")

    _assert_pixel(client.get(f"/t/o/{token(app, tokens.OPEN, [mail.id])}"))

    [opened] = system_events(tenant, mail.email, "email.opened")
    assert opened["properties"] == {"sendId": mail.id, "templateId": "day-1",
                                    "sequenceId": "onboarding", "enrolmentId": "enr_1"}


def test_events_stay_in_the_sends_tenant(app: Flask, client: FlaskClient, tenant: Tenant,
                                         other_tenant: Tenant) -> None:
    mail = insert_send(tenant)

    client.get(f"/t/o/{token(app, tokens.OPEN, [mail.id])}")

    assert len(system_events(tenant, mail.email, "email.opened")) == 1
    assert all_events(other_tenant) == []


def test_concurrent_opens_are_each_recorded(app: Flask, tenant: Tenant) -> None:
    mail = insert_send(tenant)
    url = f"/t/o/{token(app, tokens.OPEN, [mail.id])}"
    start = threading.Barrier(6)

    def one_open() -> bytes:
        start.wait()
        data: bytes = app.test_client().get(url).data
        return data

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: one_open(), range(6)))

    assert answers == [GIF] * 6
    assert len(system_events(tenant, mail.email, "email.opened")) == 6
    assert stored_send(mail.id).opened_at is not None


# -- click redirect --------------------------------------------------------------------------

def test_click_redirects_to_the_stored_url_and_records_it(app: Flask, client: FlaskClient,
                                                          tenant: Tenant) -> None:
    mail = insert_send(tenant)

    response = client.get(f"/t/c/{token(app, tokens.CLICK, [mail.id, 0])}")

    assert response.status_code == 302
    assert response.headers["Location"] == LINKS[0]
    assert "Set-Cookie" not in response.headers
    [clicked] = system_events(tenant, mail.email, "email.clicked")
    assert clicked["source"] == "system"
    assert clicked["properties"] == {"sendId": mail.id, "templateId": "welcome",
                                     "url": LINKS[0]}
    assert stored_send(mail.id).clicked_at is not None


def test_every_click_is_recorded_and_clicked_at_keeps_the_first(
        app: Flask, client: FlaskClient, tenant: Tenant) -> None:
    mail = insert_send(tenant)

    assert client.get(f"/t/c/{token(app, tokens.CLICK, [mail.id, 1])}").status_code == 302
    first = stored_send(mail.id).clicked_at
    response = client.get(f"/t/c/{token(app, tokens.CLICK, [mail.id, 0])}")

    assert response.headers["Location"] == LINKS[0]
    urls = sorted(e["properties"]["url"] for e in system_events(tenant, mail.email,
                                                                 "email.clicked"))
    assert urls == sorted(LINKS)
    assert stored_send(mail.id).clicked_at == first


def test_click_head_redirects_without_recording(app: Flask, client: FlaskClient,
                                                tenant: Tenant) -> None:
    mail = insert_send(tenant)

    response = client.head(f"/t/c/{token(app, tokens.CLICK, [mail.id, 1])}")

    assert response.status_code == 302
    assert response.headers["Location"] == LINKS[1]
    assert all_events(tenant) == []
    assert stored_send(mail.id).clicked_at is None


@pytest.mark.parametrize("payload", [
    pytest.param(lambda send_id: [send_id, 2], id="index-past-the-links"),
    pytest.param(lambda send_id: [send_id, -1], id="negative-index"),
    pytest.param(lambda send_id: [send_id, True], id="boolean-index"),
    pytest.param(lambda send_id: [send_id, "0"], id="string-index"),
    pytest.param(lambda send_id: [send_id], id="no-index"),
    pytest.param(lambda send_id: ["snd_unknown", 0], id="unknown-send"),
    pytest.param(lambda send_id: {"s": send_id, "i": 0}, id="not-a-list"),
])
def test_click_with_a_signed_but_wrong_payload_is_a_404_page(
        app: Flask, client: FlaskClient, tenant: Tenant, payload: Callable[[str], Any]) -> None:
    mail = insert_send(tenant)

    response = client.get(f"/t/c/{token(app, tokens.CLICK, payload(mail.id))}")

    _assert_not_found_page(response)
    assert all_events(tenant) == []


def test_click_with_a_tampered_or_foreign_token_is_a_404_page(
        app: Flask, client: FlaskClient, tenant: Tenant) -> None:
    mail = insert_send(tenant)
    good = token(app, tokens.CLICK, [mail.id, 0])
    payload, signature = good.split(".")
    other_index = base64.urlsafe_b64encode(f'["{mail.id}",1]'.encode()).decode().rstrip("=")

    for bad in ("garbage", f"{payload}.{signature[:-1]}", f"{other_index}.{signature}",
                token(app, tokens.OPEN, [mail.id]),  # purposes are separate
                token(app, tokens.UNSUBSCRIBE, [mail.id]),
                token(app, tokens.CLICK, [mail.id, 0], keys=("someone-elses-key",))):
        _assert_not_found_page(client.get(f"/t/c/{bad}"))

    assert all_events(tenant) == []
    assert stored_send(mail.id).clicked_at is None


@pytest.mark.parametrize("stored", ["javascript:alert(1)", "data:text/html,hi", "//evil.example",
                                    "https:evil.example", "https://evil.example/\r\nX-Evil: 1",
                                    "mailto:someone@example.com"])
def test_a_stored_link_that_is_not_plain_http_is_never_followed(
        app: Flask, client: FlaskClient, tenant: Tenant, stored: str) -> None:
    mail = insert_send(tenant, links=[stored])

    _assert_not_found_page(client.get(f"/t/c/{token(app, tokens.CLICK, [mail.id, 0])}"))
    assert all_events(tenant) == []


def test_non_ascii_and_spaces_in_a_link_are_encoded_in_the_redirect(
        app: Flask, client: FlaskClient, tenant: Tenant) -> None:
    url = "https://bücher.example/straße?q=a b&r=%C3%A9#frag"
    mail = insert_send(tenant, links=[url])

    response = client.get(f"/t/c/{token(app, tokens.CLICK, [mail.id, 0])}")

    assert response.status_code == 302
    assert response.headers["Location"] == (
        "https://xn--bcher-kva.example/stra%C3%9Fe?q=a%20b&r=%C3%A9#frag")
    [clicked] = system_events(tenant, mail.email, "email.clicked")
    assert clicked["properties"]["url"] == url


def test_links_in_mail_to_a_deleted_contact_still_work_but_record_nothing(
        app: Flask, client: FlaskClient, tenant: Tenant) -> None:
    mail = insert_send(tenant)
    assert tenant.delete(f"/api/contacts/{mail.email}").status_code == 204

    click = client.get(f"/t/c/{token(app, tokens.CLICK, [mail.id, 0])}")
    _assert_pixel(client.get(f"/t/o/{token(app, tokens.OPEN, [mail.id])}"))

    assert click.status_code == 302
    assert click.headers["Location"] == LINKS[0]
    assert all_events(tenant) == []
    assert tenant.get(f"/api/contacts/{mail.email}").status_code == 404  # not brought back
    with db.transaction() as session:
        assert session.get(Contact, mail.contact_id) is None


# -- key rotation ----------------------------------------------------------------------------

def test_tokens_signed_with_a_previous_key_keep_working_after_rotation(
        app: Flask, client: FlaskClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    mail = insert_send(tenant)
    settings = app.config["SETTINGS"]
    old_open = token(app, tokens.OPEN, [mail.id])
    old_click = token(app, tokens.CLICK, [mail.id, 0])
    rotated = dataclasses.replace(settings, secret_keys=("brand-new-key", *settings.secret_keys))
    monkeypatch.setitem(app.config, "SETTINGS", rotated)

    _assert_pixel(client.get(f"/t/o/{old_open}"))
    click = client.get(f"/t/c/{old_click}")
    new_click = token(app, tokens.CLICK, [mail.id, 1])

    assert click.status_code == 302
    assert len(system_events(tenant, mail.email, "email.opened")) == 1
    assert len(system_events(tenant, mail.email, "email.clicked")) == 1
    assert new_click == tokens.make_token(("brand-new-key",), tokens.CLICK, [mail.id, 1])
    assert client.get(f"/t/c/{new_click}").status_code == 302


def test_tokens_signed_with_a_retired_key_are_rejected(
        app: Flask, client: FlaskClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    mail = insert_send(tenant)
    settings = app.config["SETTINGS"]
    old_open = token(app, tokens.OPEN, [mail.id])
    old_click = token(app, tokens.CLICK, [mail.id, 0])
    monkeypatch.setitem(app.config, "SETTINGS",
                        dataclasses.replace(settings, secret_keys=("brand-new-key",)))

    _assert_pixel(client.get(f"/t/o/{old_open}"))
    _assert_not_found_page(client.get(f"/t/c/{old_click}"))
    assert all_events(tenant) == []

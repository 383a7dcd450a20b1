"""The dashboard's pages through Flask's test client: signing in, and what each page shows.

The live part (the script and the stream) is tested in a real browser in test_browser.py.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import db
from app.auth import hash_key
from app.dashboard.session import COOKIE
from app.ids import new_id
from app.models import Send
from app.services import ingest
from app.services import tenants
from app.services.stream_tokens import read_stream_token
from app.timeutil import utcnow
from tests.api.test_metrics import add_send
from tests.api.test_sequences import API_ONLY
from tests.api.test_sequences import active_sequence
from tests.conftest import Tenant

SIGN_IN = "/dashboard/sign-in"


def sign_in(client: FlaskClient, api_key: str, **form: str) -> Any:
    return client.post(SIGN_IN, data={"api_key": api_key, **form})


@pytest.fixture
def signed_in(client: FlaskClient, tenant: Tenant) -> Tenant:
    response = sign_in(client, tenant.api_key)
    assert response.status_code == 303, response.get_data(as_text=True)
    return tenant


def page(client: FlaskClient, path: str, status: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == status, (response.status_code, response.headers)
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def store_event(tenant_id: str, email: str, name: str, **properties: Any) -> str:
    """Store an event the way the worker does."""
    with db.transaction() as session:
        message = ingest.accept_event(session, tenant_id=tenant_id, data={
            "email": email, "event": name, "properties": properties})
        return str(ingest.store_events(session, messages=[message])[0]["id"])


def cookie_header(response: Any) -> str:
    headers = [value for value in response.headers.getlist("Set-Cookie")
               if value.startswith(f"{COOKIE}=")]
    assert len(headers) == 1, response.headers
    return str(headers[0])


# --- signing in ----------------------------------------------------------------------------------


def test_sign_in_page_is_self_contained_and_locked_down(client: FlaskClient) -> None:
    response = client.get(SIGN_IN)
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    html = response.get_data(as_text=True)
    assert '<label for="api-key">API key</label>' in html
    assert "<style" not in html and "style=" not in html and "<script>" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "no external assets"
    for asset in ("dashboard.css", "dashboard.js", "favicon.svg"):
        with client.get(f"/dashboard/static/{asset}") as static:
            assert static.status_code == 200
            assert "no-store" not in static.headers.get("Cache-Control", "")


def test_pages_send_a_signed_out_browser_to_sign_in(client: FlaskClient) -> None:
    for path in ("/dashboard/feed?event=a", "/dashboard/contacts", "/dashboard/sequences",
                 "/dashboard/sends", "/dashboard/metrics", "/dashboard/contacts/x@y.test"):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["Location"].startswith(f"{SIGN_IN}?next=")
    assert client.get("/dashboard/").headers["Location"] == SIGN_IN
    token = client.post("/dashboard/stream-token", headers={"Accept": "application/json"})
    assert token.status_code == 401 and token.get_json()["error"]["code"] == "UNAUTHORISED"


def test_a_wrong_key_is_refused(client: FlaskClient, tenant: Tenant) -> None:
    for key in ("kr_not-a-key", "nonsense", ""):
        response = sign_in(client, key)
        assert response.status_code == 401
        assert "That API key is not valid" in response.get_data(as_text=True)
        assert not response.headers.getlist("Set-Cookie")


def test_signing_in_keeps_only_a_signed_digest(client: FlaskClient, tenant: Tenant) -> None:
    response = sign_in(client, tenant.api_key, next="/dashboard/sends?status=sent")
    assert response.status_code == 303
    assert response.headers["Location"] == "/dashboard/sends?status=sent"
    cookie = cookie_header(response)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain http in tests; https requests get Secure
    assert tenant.api_key not in cookie and tenant.api_key[3:] not in cookie
    html = page(client, "/dashboard/feed")
    assert "Acme" in html and tenant.api_key not in html
    # The sign-in form of a signed-in browser goes straight on.
    assert client.get(SIGN_IN).headers["Location"] == "/dashboard/feed"


def test_https_cookies_are_secure(client: FlaskClient, tenant: Tenant) -> None:
    response = client.post(SIGN_IN, data={"api_key": tenant.api_key},
                           base_url="https://kraiter.test")
    assert "Secure" in cookie_header(response)


def test_next_never_leaves_the_dashboard(client: FlaskClient, tenant: Tenant) -> None:
    for target in ("https://evil.test/", "//evil.test/x", "/api/contacts", "/dashboard\\x"):
        response = sign_in(client, tenant.api_key, next=target)
        assert response.headers["Location"] == "/dashboard/feed", target


def test_posts_from_other_sites_are_refused(client: FlaskClient, tenant: Tenant) -> None:
    evil = {"Origin": "https://evil.test"}
    response = client.post(SIGN_IN, data={"api_key": tenant.api_key}, headers=evil)
    assert response.status_code == 403 and not response.headers.getlist("Set-Cookie")
    assert client.post(SIGN_IN, data={"api_key": tenant.api_key},
                       headers={"Referer": "https://evil.test/page"}).status_code == 403
    assert client.post(SIGN_IN, data={"api_key": tenant.api_key},
                       headers={"Origin": "null"}).status_code == 403
    ours = client.post(SIGN_IN, data={"api_key": tenant.api_key},
                       headers={"Origin": "http://localhost"})
    assert ours.status_code == 303
    assert client.post("/dashboard/stream-token", headers=evil).status_code == 403
    assert client.post("/dashboard/sign-out", headers=evil).status_code == 403
    assert client.get("/dashboard/feed").status_code == 200


def test_sign_out(client: FlaskClient, signed_in: Tenant) -> None:
    response = client.post("/dashboard/sign-out")
    assert response.status_code == 303 and response.headers["Location"] == SIGN_IN
    assert "Max-Age=0" in cookie_header(response) or "expires=Thu, 01 Jan 1970" in \
        cookie_header(response)
    assert client.get("/dashboard/feed").status_code == 303


def test_revoking_the_key_signs_the_dashboard_out(client: FlaskClient,
                                                  signed_in: Tenant) -> None:
    assert client.get("/dashboard/feed").status_code == 200
    with db.transaction() as session:
        (key,) = tenants.list_keys(session, tenant_id=signed_in.id)
        tenants.revoke_key(session, key_id=key.id)
    response = client.get("/dashboard/feed")
    assert response.status_code == 303
    assert f"{COOKIE}=;" in cookie_header(response)  # the dead cookie is cleared
    assert client.post("/dashboard/stream-token").status_code == 401


def test_a_tampered_cookie_is_ignored(client: FlaskClient, signed_in: Tenant,
                                      other_tenant: Tenant) -> None:
    value = client.get_cookie(COOKIE, path="/dashboard")
    assert value is not None
    payload, _, signature = value.value.rpartition(".")
    client.set_cookie(COOKIE, payload + "." + signature[::-1], path="/dashboard")
    assert client.get("/dashboard/feed").status_code == 303


@pytest.fixture
def rotated(app: Flask) -> Iterator[Any]:
    original = app.config["SETTINGS"]

    def use(*keys: str) -> None:
        app.config["SETTINGS"] = dataclasses.replace(original, secret_keys=keys)

    yield use
    app.config["SETTINGS"] = original


def test_secret_keys_rotate(client: FlaskClient, signed_in: Tenant, rotated: Any) -> None:
    rotated("new-secret", "test-secret")  # a new first key; the old one still verifies
    assert client.get("/dashboard/feed").status_code == 200
    rotated("new-secret")
    assert client.get("/dashboard/feed").status_code == 303


def test_stream_tokens_name_the_tenant_and_key(app: Flask, client: FlaskClient,
                                               signed_in: Tenant) -> None:
    response = client.post("/dashboard/stream-token", headers={"Accept": "application/json"})
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"token", "expiresAt"}
    secret_keys = app.config["SETTINGS"].secret_keys
    assert read_stream_token(secret_keys=secret_keys, token=body["token"]) == (
        signed_in.id, hash_key(signed_in.api_key))


# --- pages ---------------------------------------------------------------------------------------


def test_feed_lists_the_latest_events_with_filters(client: FlaskClient, signed_in: Tenant,
                                                   other_tenant: Tenant) -> None:
    store_event(signed_in.id, "ann@example.com", "signup", plan="pro")
    store_event(signed_in.id, "bob@example.com", "purchase", amount=42, note="<b>hi</b>")
    last = store_event(signed_in.id, "ann@example.com", "purchase", amount=7)
    store_event(other_tenant.id, "eve@example.com", "secret.event")

    whole = page(client, "/dashboard/feed")
    html = whole.split('id="feed-list"')[1]
    assert html.index("amount</span> <span class=\"value\">7") < html.index("signup")
    assert "secret.event" not in html and "eve@example.com" not in html
    assert "&lt;b&gt;hi&lt;/b&gt;" in html and "<b>hi</b>" not in html
    assert f'data-resume-from="{last}"' in whole
    assert 'data-stream-url="/api/events/stream"' in whole

    by_name = page(client, "/dashboard/feed?event=purchase")
    assert "signup" not in by_name and by_name.count('class="event" data-id=') == 2
    assert 'data-event="purchase"' in by_name
    by_email = page(client, "/dashboard/feed?email=ann@EXAMPLE.com")
    assert "bob@example.com" not in by_email.split('id="feed-list"')[1]
    assert by_email.count('class="event" data-id=') == 2
    assert 'data-email="ann@example.com"' in by_email
    nobody = page(client, "/dashboard/feed?email=nobody@example.com")
    assert nobody.count('class="event" data-id=') == 0 and "No events yet" in nobody
    invalid = page(client, "/dashboard/feed?email=not-an-address")
    assert "That is not an e-mail address." in invalid and "data-disabled" in invalid


def test_contact_page(client: FlaskClient, signed_in: Tenant) -> None:
    created = signed_in.post("/api/contacts", json={
        "email": "ann@example.com", "properties": {"plan": "pro", "seats": 3}}).get_json()
    store_event(signed_in.id, "ann@example.com", "signup", source_page="/pricing")
    active_sequence(signed_in, "onboarding", API_ONLY, ("welcome", "tips"))
    assert signed_in.post("/api/sequences/onboarding/enrolments",
                          json={"email": "ann@example.com"}).status_code == 201
    now = utcnow()
    with db.transaction() as session:
        session.add(Send(id=new_id("snd"), tenant_id=signed_in.id, contact_id=created["id"],
                         email="ann@example.com", template_id="receipt", subject="Your receipt",
                         status="bounced", created_at=now, updated_at=now))

    for ref in (created["id"], "ann@example.com"):
        html = page(client, f"/dashboard/contacts/{ref}")
        assert "<dt>plan</dt><dd>pro</dd>" in html and "<dt>seats</dt><dd>3</dd>" in html
        assert "signup" in html and "/pricing" in html
        assert "Your receipt" in html and '<span class="badge badge-bounced">bounced</span>' in html
        assert 'href="/dashboard/sequences/onboarding"' in html
        assert '<span class="badge badge-active">active</span>' in html
    missing = page(client, "/dashboard/contacts/nobody@example.com", status=404)
    assert "not found" in missing and 'aria-current="page"' in missing  # still has the menu

    listed = page(client, "/dashboard/contacts?search=ann")
    assert f'href="/dashboard/contacts/{created["id"]}"' in listed
    assert "No contact" in page(client, "/dashboard/contacts?search=zed")


def test_sequence_pages(client: FlaskClient, signed_in: Tenant) -> None:
    active_sequence(signed_in, "onboarding", API_ONLY, ("welcome", "tips"))
    signed_in.put("/api/sequences/later", json={"name": "Later", "definition": API_ONLY})
    for email in ("ann@example.com", "bob@example.com"):
        assert signed_in.post("/api/sequences/onboarding/enrolments",
                              json={"email": email}).status_code == 201

    listed = page(client, "/dashboard/sequences")
    row = listed.split('href="/dashboard/sequences/onboarding"')[1].split("</tr>")[0]
    assert '<span class="badge badge-active">active</span>' in row
    assert '<td data-label="Active" class="num">2</td>' in row
    assert '<td data-label="Completed" class="num">0</td>' in row
    assert '<span class="badge badge-draft">draft</span>' in listed

    html = page(client, "/dashboard/sequences/onboarding")
    assert "<li>Send e-mail welcome</li><li>Wait 1d</li><li>Send e-mail tips</li>" in html
    assert "Enrolment through the API only" in html
    assert '<span class="stat-value">2</span> <span class="stat-label">Active</span>' in html
    upcoming = html.split('id="upcoming-heading"')[1].split("</section>")[0]
    assert "ann@example.com" in upcoming and "bob@example.com" in upcoming
    assert "3 · email tips" in upcoming  # the welcome e-mail went at once, then a day's wait
    latest = html.split('id="enrolments-heading"')[1]
    assert "ann@example.com</a>" in latest and "bob@example.com</a>" in latest
    assert page(client, "/dashboard/sequences/nope", status=404)


def test_sends_page(client: FlaskClient, signed_in: Tenant, other_tenant: Tenant) -> None:
    add_send(signed_in.id, template="welcome", status="delivered")
    add_send(signed_in.id, template="receipt", status="bounced")
    add_send(other_tenant.id, template="secret", status="delivered")
    html = page(client, "/dashboard/sends")
    assert "welcome" in html and "receipt" in html and "secret" not in html
    assert '<span class="badge badge-delivered">delivered</span>' in html
    bounced = page(client, "/dashboard/sends?status=bounced")
    assert "receipt" in bounced and "welcome" not in bounced.split("<tbody>")[1]
    assert "No failed sends." in page(client, "/dashboard/sends?status=failed")
    page(client, "/dashboard/sends?status=whatever", status=404)


def test_sends_page_pages(client: FlaskClient, signed_in: Tenant) -> None:
    for _ in range(51):
        add_send(signed_in.id, status="queued")
    first = page(client, "/dashboard/sends?status=queued")
    assert first.count("<tr>") == 51  # the header row and 50 sends
    older = re.search(r'<p class="pager"><a href="([^"]+)">Older sends', first)
    assert older is not None and "status=queued" in older.group(1)
    second = page(client, older.group(1).replace("&amp;", "&"))
    assert second.count("<tr>") == 2 and "Older sends" not in second


def test_metrics_page_draws_the_metrics(client: FlaskClient, signed_in: Tenant) -> None:
    add_send(signed_in.id, sent="2025-06-02T09:15:00Z", delivered="2025-06-02T09:16:00Z",
             opened="2025-06-03T10:00:00Z", clicked="2025-06-03T10:01:00Z")
    add_send(signed_in.id, sent="2025-06-02T11:00:00Z", delivered="2025-06-02T11:00:05Z")
    add_send(signed_in.id, status="bounced", sent="2025-06-04T08:00:00Z",
             bounced="2025-06-04T08:00:01Z")
    html = page(client, "/dashboard/metrics?period=day&from=2025-06-01&to=2025-06-05")
    found = {label: value for value, label in re.findall(
        r'<span class="stat-value">([^<]+)</span> <span class="stat-label">'
        r'(?:<span class="swatch s-\w+" aria-hidden="true"></span>)?([^<]+)', html)}
    assert found["Sent"] == "3" and found["Delivered"] == "2" and found["Opened"] == "1"
    assert found["Bounced"] == "1" and found["Delivery rate"] == "66.7%"
    assert found["Click-to-open rate"] == "100.0%"
    assert html.count("<svg") == 2 and html.count('<g class="series s-sent">') == 2
    sent_line = re.search(r'<g class="series s-sent">\s*<polyline points="([^"]+)"', html)
    assert sent_line is not None and len(sent_line.group(1).split()) == 5  # 1-5 June
    assert "Jun 2" in html and "<td class=\"num\">2</td>" in html
    bad = page(client, "/dashboard/metrics?from=2025-06-05&to=2025-06-01")
    assert "showing the last 30 days" in bad


def test_tables_of_other_tenants_stay_hidden(client: FlaskClient, signed_in: Tenant,
                                             other_tenant: Tenant) -> None:
    theirs = other_tenant.post("/api/contacts", json={"email": "eve@example.com"}).get_json()
    page(client, f"/dashboard/contacts/{theirs['id']}", status=404)
    page(client, "/dashboard/contacts/eve@example.com", status=404)
    active_sequence(other_tenant, "theirs", API_ONLY, ("welcome", "tips"))
    page(client, "/dashboard/sequences/theirs", status=404)
    assert "theirs" not in page(client, "/dashboard/sequences")


def test_idle_cookies_lapse(client: FlaskClient, signed_in: Tenant, monkeypatch: Any) -> None:
    from app.dashboard import session

    monkeypatch.setattr(session, "IDLE", timedelta(seconds=-1))
    assert client.get("/dashboard/feed").status_code == 303


def test_an_unknown_dashboard_address_gets_the_dashboards_404_page(client: FlaskClient) -> None:
    answer = client.get("/dashboard/no/such/page")
    assert answer.status_code == 404
    assert answer.mimetype == "text/html"
    assert "no such page" in answer.get_data(as_text=True)

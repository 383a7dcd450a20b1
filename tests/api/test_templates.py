"""Templates over HTTP (contract §6): upsert with versions, list, get, delete, preview."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func
from sqlalchemy import select

from app import db
from app.models import Contact
from app.models import Event
from app.models import Send
from app.models import Template
from app.timeutil import parse_iso
from tests.conftest import Tenant

WELCOME = {
    "name": "Welcome",
    "subject": "Welcome, {{ firstName | default: 'there' }}",
    "html": "<h1>Hi {{ firstName | default: 'there' }}</h1>\n"
            "{% if plan == 'pro' %}<p>Thanks for going pro.</p>{% endif %}\n"
            "<p><a href='https://acme.test/start'>Get started</a></p>\n"
            "<p><a href='{{ unsubscribeUrl }}'>Unsubscribe</a></p>",
}


def _put(tenant: Tenant, template_id: str, body: dict[str, Any] | None = None,
         status: int = 201) -> dict[str, Any]:
    response = tenant.put(f"/api/templates/{template_id}", json=body or WELCOME)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def _error(response: Any, status: int, code: str = "VALIDATION_ERROR") -> dict[str, Any]:
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == code
    return error


def _count(model: Any) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


# --- upsert and versions ------------------------------------------------------------------------

def test_put_creates_a_template(tenant: Tenant) -> None:
    created = _put(tenant, "welcome-email")

    assert created == {
        "id": "welcome-email", "name": "Welcome", "subject": WELCOME["subject"],
        "html": WELCOME["html"], "mjml": None, "text": None,
        "variables": ["firstName", "plan", "unsubscribeUrl"], "version": 1,
        "createdAt": created["createdAt"], "updatedAt": created["createdAt"],
    }
    assert created["createdAt"].endswith("Z")
    assert tenant.get("/api/templates/welcome-email").get_json() == created


def test_identical_put_keeps_the_version_and_a_change_increments_it(tenant: Tenant) -> None:
    first = _put(tenant, "welcome")

    again = _put(tenant, "welcome", status=200)
    assert again == first

    changed = _put(tenant, "welcome", {**WELCOME, "subject": "Hello {{ firstName }}"}, status=200)
    assert changed["version"] == 2
    assert changed["subject"] == "Hello {{ firstName }}"
    assert changed["createdAt"] == first["createdAt"]
    assert parse_iso(changed["updatedAt"]) > parse_iso(first["updatedAt"])

    renamed = _put(tenant, "welcome", {**WELCOME, "subject": "Hello {{ firstName }}",
                                       "name": "Welcome v2"}, status=200)
    assert renamed["version"] == 3
    assert _put(tenant, "welcome", {**WELCOME, "subject": "Hello {{ firstName }}",
                                    "name": "Welcome v2"}, status=200)["version"] == 3


def test_switching_the_body_from_html_to_mjml_replaces_the_whole_template(tenant: Tenant) -> None:
    _put(tenant, "t", {**WELCOME, "text": "Plain {{ firstName }}"})
    mjml = "<mjml><mj-body><mj-section><mj-column><mj-text>Hi</mj-text></mj-column>" \
           "</mj-section></mj-body></mjml>"

    updated = _put(tenant, "t", {"name": "T", "subject": "S", "mjml": mjml}, status=200)

    assert (updated["html"], updated["mjml"], updated["text"]) == (None, mjml, None)
    assert updated["version"] == 2


def test_a_body_id_must_match_the_path_and_variables_are_accepted(tenant: Tenant) -> None:
    created = _put(tenant, "welcome", {**WELCOME, "id": "welcome", "variables": ["firstName"]})
    assert created["version"] == 1

    error = _error(tenant.put("/api/templates/welcome", json={**WELCOME, "id": "other"}), 400)
    assert "id" in error["details"]


@pytest.mark.parametrize("template_id", ["has space", "a" * 201, "émoji", "semi;colon"])
def test_template_ids_are_slugs(tenant: Tenant, template_id: str) -> None:
    error = _error(tenant.put(f"/api/templates/{template_id}", json=WELCOME), 400)

    assert "id" in error["details"]


def test_ids_may_use_letters_digits_dashes_underscores_and_dots(tenant: Tenant) -> None:
    template_id = "Order_Confirmation-v2.1"

    assert _put(tenant, template_id)["id"] == template_id
    assert tenant.get(f"/api/templates/{template_id}").status_code == 200


@pytest.mark.parametrize(("body", "field"), [
    ({"subject": "s", "html": "<p>x</p>"}, "name"),
    ({"name": "n", "html": "<p>x</p>"}, "subject"),
    ({"name": "n", "subject": "s"}, "html"),
    ({"name": "n", "subject": "s", "html": "<p>x</p>", "mjml": "<mjml></mjml>"}, "mjml"),
    ({"name": "n", "subject": "s", "html": 5}, "html"),
    ({"name": "", "subject": "s", "html": "<p>x</p>"}, "name"),
    ({**WELCOME, "colour": "red"}, "colour"),
])
def test_invalid_bodies_name_the_field(tenant: Tenant, body: dict[str, Any], field: str) -> None:
    error = _error(tenant.put("/api/templates/t", json=body), 400)

    assert field in error["details"]
    assert _count(Template) == 0


def test_invalid_liquid_is_a_400_that_points_at_the_line(tenant: Tenant) -> None:
    html = "<p>Hello</p>\n<p>{{ firstName }}</p>\n{% if plan == 'pro' %}\n<p>pro</p>\n"

    error = _error(tenant.put("/api/templates/t", json={**WELCOME, "html": html}), 400)

    assert "line 5" in error["message"]
    assert "html" in error["message"]
    assert list(error["details"]) == ["html"]
    assert _count(Template) == 0


def test_invalid_liquid_in_the_subject_or_an_unknown_filter_is_refused(tenant: Tenant) -> None:
    subject = _error(tenant.put("/api/templates/t", json={**WELCOME, "subject": "Hi {{ x"}), 400)
    assert list(subject["details"]) == ["subject"]

    text = {**WELCOME, "text": "ok\n{{ firstName | shout }}"}
    error = _error(tenant.put("/api/templates/t", json=text), 400)
    assert list(error["details"]) == ["text"]
    assert "line 2" in error["message"]
    assert "shout" in error["message"]


def test_invalid_mjml_is_refused(tenant: Tenant) -> None:
    body = {"name": "n", "subject": "s", "mjml": "<mjml><mj-body><mj-section>"}

    error = _error(tenant.put("/api/templates/t", json=body), 400)

    assert list(error["details"]) == ["mjml"]


def test_a_failed_update_leaves_the_template_as_it_was(tenant: Tenant) -> None:
    first = _put(tenant, "t")

    _error(tenant.put("/api/templates/t", json={**WELCOME, "html": "{% for %}"}), 400)

    assert tenant.get("/api/templates/t").get_json() == first


def _concurrently(app: Flask, tenant: Tenant, bodies: list[dict[str, Any]]) -> list[int]:
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def run(body: dict[str, Any]) -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(client.put("/api/templates/race", headers=tenant.headers,
                                   json=body).status_code)

    threads = [threading.Thread(target=run, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(statuses)


def test_concurrent_identical_puts_create_one_template_once(app: Flask, tenant: Tenant) -> None:
    statuses = _concurrently(app, tenant, [WELCOME] * 8)

    assert statuses == [200] * 7 + [201]
    assert tenant.get("/api/templates/race").get_json()["version"] == 1


def test_concurrent_changes_each_count_once(app: Flask, tenant: Tenant) -> None:
    _put(tenant, "race")

    statuses = _concurrently(app, tenant, [{**WELCOME, "name": f"N{n}"} for n in range(6)])

    assert statuses == [200] * 6
    assert tenant.get("/api/templates/race").get_json()["version"] == 7


# --- list, get, delete -------------------------------------------------------------------------

def test_list_pages_through_templates_in_id_order(tenant: Tenant) -> None:
    for template_id in ["c", "a", "e", "b", "d"]:
        _put(tenant, template_id, {**WELCOME, "name": template_id.upper()})

    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = tenant.get(f"/api/templates{query}").get_json()
        assert len(page["data"]) <= 2
        seen += [item["id"] for item in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break

    assert seen == ["a", "b", "c", "d", "e"]
    assert tenant.get("/api/templates").get_json()["data"][0]["name"] == "A"


def test_list_rejects_bad_paging_parameters(tenant: Tenant) -> None:
    assert "limit" in _error(tenant.get("/api/templates?limit=101"), 400)["details"]
    assert "cursor" in _error(tenant.get("/api/templates?cursor=!!"), 400)["details"]


def test_delete_removes_the_template(tenant: Tenant) -> None:
    _put(tenant, "t")

    response = tenant.delete("/api/templates/t")

    assert response.status_code == 204
    _error(tenant.get("/api/templates/t"), 404, "NOT_FOUND")
    _error(tenant.delete("/api/templates/t"), 404, "NOT_FOUND")
    assert _put(tenant, "t")["version"] == 1  # a new template under the old id


def test_unknown_templates_are_404(tenant: Tenant) -> None:
    _error(tenant.get("/api/templates/nope"), 404, "NOT_FOUND")
    _error(tenant.get("/api/templates/not a slug"), 404, "NOT_FOUND")
    _error(tenant.post("/api/templates/nope/preview", json={}), 404, "NOT_FOUND")


def test_the_unprefixed_paths_work_too(tenant: Tenant) -> None:
    response = tenant.put("/templates/plain", json=WELCOME)

    assert response.status_code == 201
    assert tenant.get("/templates").get_json()["data"][0]["id"] == "plain"


def test_templates_need_an_api_key(client: Any) -> None:
    assert client.get("/api/templates").status_code == 401
    assert client.put("/api/templates/t", json=WELCOME).status_code == 401


# --- tenant isolation ---------------------------------------------------------------------------

def test_tenants_never_see_each_others_templates(tenant: Tenant, other_tenant: Tenant) -> None:
    _put(tenant, "welcome")

    _error(other_tenant.get("/api/templates/welcome"), 404, "NOT_FOUND")
    _error(other_tenant.delete("/api/templates/welcome"), 404, "NOT_FOUND")
    _error(other_tenant.post("/api/templates/welcome/preview", json={}), 404, "NOT_FOUND")
    assert other_tenant.get("/api/templates").get_json() == {"data": [], "nextCursor": None}


def test_tenants_reuse_template_ids_independently(tenant: Tenant, other_tenant: Tenant) -> None:
    _put(tenant, "welcome")
    theirs = _put(other_tenant, "welcome", {**WELCOME, "subject": "Theirs"})
    assert theirs["version"] == 1

    assert _put(tenant, "welcome", {**WELCOME, "subject": "Ours"}, status=200)["version"] == 2
    assert other_tenant.get("/api/templates/welcome").get_json()["subject"] == "Theirs"

    assert tenant.delete("/api/templates/welcome").status_code == 204
    assert other_tenant.get("/api/templates/welcome").status_code == 200


# --- preview -------------------------------------------------------------------------------------

def _preview(tenant: Tenant, template_id: str, body: dict[str, Any] | None = None,
             status: int = 200) -> dict[str, Any]:
    response = tenant.post(f"/api/templates/{template_id}/preview", json=body or {})
    assert response.status_code == status, response.get_json()
    return response.get_json()


def test_preview_with_an_inline_contact_stores_nothing(tenant: Tenant) -> None:
    _put(tenant, "welcome")
    before = tenant.get("/api/templates/welcome").get_json()

    shown = _preview(tenant, "welcome", {"contact": {"email": "new@example.test",
                                                     "properties": {"firstName": "Ann",
                                                                    "plan": "pro"}}})

    assert shown["subject"] == "Welcome, Ann"
    assert "<h1>Hi Ann</h1>" in shown["html"]
    assert "Thanks for going pro." in shown["html"]
    assert "Get started (https://acme.test/start)" in shown["text"]
    # No tracking in a preview: links stay as written, and there is no open pixel.
    assert "/t/c/" not in shown["html"]
    assert "/t/o/" not in shown["html"]
    assert (_count(Contact), _count(Event), _count(Send)) == (0, 0, 0)
    assert tenant.get("/api/templates/welcome").get_json() == before


def test_preview_without_a_body_uses_defaults(tenant: Tenant) -> None:
    _put(tenant, "welcome")

    response = tenant.post("/api/templates/welcome/preview")

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["subject"] == "Welcome, there"
    assert "/unsubscribe/" in response.get_json()["html"]


def test_preview_with_a_stored_contact_by_id_or_email(tenant: Tenant) -> None:
    _put(tenant, "t", {"name": "T", "subject": "For {{ contact.email }}",
                       "html": "<p>{{ contact.id }} {{ firstName }}</p>"})
    contact = tenant.post("/api/contacts", json={
        "email": "ann@example.test", "properties": {"firstName": "Ann"}}).get_json()

    by_id = _preview(tenant, "t", {"contact": contact["id"]})
    by_email = _preview(tenant, "t", {"contact": "ann@EXAMPLE.test"})

    assert by_id == by_email
    assert by_id["subject"] == "For ann@example.test"
    assert by_id["html"] == f"<p>{contact['id']} Ann</p>"


def test_preview_with_an_unknown_or_foreign_contact_is_404(tenant: Tenant,
                                                         other_tenant: Tenant) -> None:
    _put(tenant, "t")
    theirs = other_tenant.post("/api/contacts", json={"email": "x@example.test"}).get_json()

    _error(tenant.post("/api/templates/t/preview", json={"contact": "nobody@example.test"}),
           404, "NOT_FOUND")
    _error(tenant.post("/api/templates/t/preview", json={"contact": "cnt_unknown"}),
           404, "NOT_FOUND")
    _error(tenant.post("/api/templates/t/preview", json={"contact": theirs["id"]}),
           404, "NOT_FOUND")
    assert _count(Contact) == 1


def test_preview_uses_variables_and_the_event(tenant: Tenant) -> None:
    html = ("<p>Order {{ variables.orderId }} ({{ orderId }}) after {{ event.event }}</p>"
            "{% for item in items %}<li>{{ item.name }} x{{ item.qty }}</li>{% endfor %}")
    _put(tenant, "order", {"name": "Order", "subject": "Order {{ orderId }}", "html": html})

    shown = _preview(tenant, "order", {
        "contact": {"email": "ann@example.test"},
        "variables": {"orderId": "A-1", "items": [{"name": "Tea", "qty": 2}]},
        "event": {"event": "purchase.completed", "properties": {"amount": 60}},
    })

    assert shown["subject"] == "Order A-1"
    assert shown["html"] == ("<p>Order A-1 (A-1) after purchase.completed</p>"
                             "<li>Tea x2</li>")


def test_preview_escapes_html_from_properties(tenant: Tenant) -> None:
    _put(tenant, "welcome")

    shown = _preview(tenant, "welcome", {"contact": {
        "email": "a@example.test", "properties": {"firstName": "<script>alert(1)</script>"}}})

    assert "<script>" not in shown["html"]
    assert "&lt;script&gt;" in shown["html"]
    assert shown["subject"] == "Welcome, <script>alert(1)</script>"


def test_preview_of_an_mjml_template(tenant: Tenant) -> None:
    mjml = ("<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ firstName }}</mj-text>"
            "<mj-button href='https://acme.test/go'>Go</mj-button>"
            "</mj-column></mj-section></mj-body></mjml>")
    _put(tenant, "m", {"name": "M", "subject": "S", "mjml": mjml})

    shown = _preview(tenant, "m", {"contact": {"email": "a@example.test",
                                               "properties": {"firstName": "Ann"}}})

    assert shown["html"].lower().startswith("<!doctype html>")
    assert "Hi Ann" in shown["html"]
    assert "Go (https://acme.test/go)" in shown["text"]


def test_preview_that_breaks_a_sandbox_limit_is_a_clean_400(tenant: Tenant) -> None:
    html = "{% for i in (1..count) %}{% for j in (1..count) %}x{% endfor %}{% endfor %}"
    _put(tenant, "loop", {"name": "L", "subject": "S", "html": html})

    started = time.monotonic()
    error = _error(tenant.post("/api/templates/loop/preview",
                               json={"variables": {"count": 100000}}), 400)

    assert time.monotonic() - started < 5
    assert "limit" in error["message"]
    assert list(error["details"]) == ["html"]
    assert _preview(tenant, "loop", {"variables": {"count": 3}})["html"] == "x" * 9


@pytest.mark.parametrize(("body", "field"), [
    ({"contact": {"properties": {}}}, "contact"),
    ({"contact": {"email": "not-an-email"}}, "contact"),
    ({"contact": 5}, "contact"),
    ({"variables": [1, 2]}, "variables"),
    ({"event": "purchase"}, "event"),
    ({"extra": 1}, "extra"),
])
def test_invalid_preview_bodies_name_the_field(tenant: Tenant, body: dict[str, Any],
                                               field: str) -> None:
    _put(tenant, "t")

    error = _error(tenant.post("/api/templates/t/preview", json=body), 400)

    assert field in error["details"]


def test_templates_are_in_the_openapi_document(client: Any) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]

    assert {"put", "get", "delete"} <= set(paths["/templates/{id}"])
    assert "post" in paths["/templates/{id}/preview"]
    assert "get" in paths["/templates"]

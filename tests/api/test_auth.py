"""API keys: one uniform 401 for every kind of bad key; revocation takes effect at once."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from app import db
from app.services import tenants
from tests.conftest import Tenant

EVENT = {"email": "a@acme.test", "event": "x"}


def _unauthorised(response: Any) -> dict[str, Any]:
    assert response.status_code == 401
    body = response.get_json()
    assert body["error"]["code"] == "UNAUTHORISED"
    return body


def _key_id(tenant: Tenant) -> str:
    with db.transaction() as session:
        (key,) = tenants.list_keys(session, tenant_id=tenant.id)
        return key.id


@pytest.mark.parametrize("header", [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    "kr_nobearer",
    "Bearer not-a-kraiter-key",
    "Bearer kr_" + "A" * 43,
    "Token kr_" + "A" * 43,
])
@pytest.mark.parametrize(("method", "path"), [("post", "/api/events"), ("post", "/events"),
                                              ("get", "/api/events"),
                                              ("post", "/api/events/batch"),
                                              ("get", "/api/events/evt_1")])
def test_bad_keys_get_one_uniform_401(client: FlaskClient, tenant: Tenant, header: str | None,
                                      method: str, path: str) -> None:
    headers = {} if header is None else {"Authorization": header}
    reference = _unauthorised(client.get("/api/events"))

    response = getattr(client, method)(path, json=EVENT, headers=headers)

    assert _unauthorised(response) == reference
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_another_tenants_key_with_a_typo_is_401(client: FlaskClient, tenant: Tenant) -> None:
    typo = tenant.api_key[:-1] + ("A" if tenant.api_key[-1] != "A" else "B")

    _unauthorised(client.post("/api/events", json=EVENT,
                              headers={"Authorization": f"Bearer {typo}"}))


def test_401_comes_before_body_validation(client: FlaskClient) -> None:
    _unauthorised(client.post("/api/events", data=b"{broken",
                              headers={"Authorization": "Bearer kr_nope"}))


def test_valid_key_is_accepted_whatever_the_scheme_case(tenant: Tenant) -> None:
    response = tenant.client.post("/api/events", json=EVENT,
                                  headers={"Authorization": f"bearer {tenant.api_key}"})

    assert response.status_code == 202


def test_revoked_key_is_401_on_the_very_next_request(client: FlaskClient,
                                                     tenant: Tenant) -> None:
    assert tenant.post("/api/events", json=EVENT).status_code == 202
    key_id = _key_id(tenant)

    with db.transaction() as session:
        tenants.revoke_key(session, key_id=key_id)

    reference = _unauthorised(client.get("/api/events"))
    assert _unauthorised(tenant.post("/api/events", json=EVENT)) == reference
    assert _unauthorised(tenant.get("/api/events")) == reference


def test_revoking_one_key_leaves_the_tenants_other_keys_working(tenant: Tenant) -> None:
    key_id = _key_id(tenant)
    with db.transaction() as session:
        second = tenants.create_key(session, tenant_id=tenant.id, name="second").raw_key
        tenants.revoke_key(session, key_id=key_id)

    response = tenant.client.post("/api/events", json=EVENT,
                                  headers={"Authorization": f"Bearer {second}"})

    assert response.status_code == 202
    _unauthorised(tenant.post("/api/events", json=EVENT))


def test_openapi_needs_no_key(client: FlaskClient) -> None:
    assert client.get("/api/openapi.json").status_code == 200

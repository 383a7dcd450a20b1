"""GET /api/keys lists the tenant's keys; creating or revoking them with an API key is 403."""

from __future__ import annotations

from app import db
from app.services import tenants
from tests.conftest import Tenant


def test_lists_the_tenants_keys_without_raw_keys(tenant: Tenant, other_tenant: Tenant) -> None:
    with db.transaction() as session:
        second = tenants.create_key(session, tenant_id=tenant.id, name="ci")
        tenants.revoke_key(session, key_id=second.key.id)

    answer = tenant.get("/api/keys")

    assert answer.status_code == 200
    body = answer.get_json()
    assert body["nextCursor"] is None
    assert [key["name"] for key in body["data"]] == ["default", "ci"]
    assert body["data"][1]["revokedAt"].endswith("Z") and body["data"][0]["revokedAt"] is None
    assert all(key["keyPrefix"] and key["id"].startswith("key_") for key in body["data"])
    assert tenant.api_key not in answer.get_data(as_text=True)
    assert second.raw_key not in answer.get_data(as_text=True)
    assert len(other_tenant.get("/keys").get_json()["data"]) == 1


def test_creating_or_revoking_with_an_api_key_is_forbidden(tenant: Tenant) -> None:
    for answer in (tenant.post("/api/keys", json={"name": "x"}),
                   tenant.delete("/api/keys/key_123")):
        assert answer.status_code == 403
        assert answer.get_json()["error"]["code"] == "FORBIDDEN"
    assert len(tenant.get("/api/keys").get_json()["data"]) == 1
    assert tenant.client.get("/api/keys").status_code == 401

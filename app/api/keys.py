"""API keys over HTTP: listing only. Keys are created and revoked with the CLI.

The Kraiter docs reserve creating and revoking keys to the dashboard's own sign-in and answer an
API key with 403; here that management is `kraiter keys create|revoke` on the server.
"""

from __future__ import annotations

from typing import Any

from flask import g

from app import db
from app.api.blueprint import api
from app.api.blueprint import document
from app.auth import require_api_key
from app.errors import Forbidden
from app.schemas.keys import ApiKeyPageSchema
from app.services import tenants

_MANAGED_ELSEWHERE = ("API keys are created and revoked with the `kraiter keys` command on the "
                      "server, not with an API key.")

document("/keys", "get", "List the tenant's API keys (never the raw keys)", tag="keys",
         response=ApiKeyPageSchema)


@api.get("/keys")
@require_api_key
def list_keys() -> Any:
    keys = tenants.list_keys(db.session, tenant_id=g.tenant_id)
    data = [{name: value for name, value in tenants.key_view(key).items() if name != "tenantId"}
            for key in keys]
    return {"data": data, "nextCursor": None}


@api.post("/keys")
@api.delete("/keys/<key_id>")
@require_api_key
def manage_keys(key_id: str | None = None) -> Any:
    raise Forbidden(_MANAGED_ELSEWHERE)

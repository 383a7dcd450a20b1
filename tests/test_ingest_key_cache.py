"""The API key cache: a revoked key is never remembered, whichever request applies the news."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from app import db
from app.auth import hash_key
from app.auth import tenant_for_digest
from app.models import ApiKey
from app.services import tenants
from tests.conftest import Tenant


def _active_tenant(digest: str) -> str | None:
    with db.transaction() as session:
        return session.scalar(select(ApiKey.tenant_id).where(ApiKey.key_hash == digest,
                                                             ApiKey.revoked_at.is_(None)))


def _new_key(tenant: Tenant, name: str) -> tuple[str, str]:
    with db.transaction() as session:
        issued = tenants.create_key(session, tenant_id=tenant.id, name=name)
    return issued.key.id, hash_key(issued.raw_key)


def test_a_key_revoked_while_it_is_looked_up_is_not_remembered(app: Flask,
                                                                tenant: Tenant) -> None:
    key_id, digest = _new_key(tenant, "revoked mid-lookup")
    _, other_digest = _new_key(tenant, "bystander")

    def load_then_revoke(wanted: str) -> str | None:
        found = _active_tenant(wanted)
        with db.transaction() as session:
            tenants.revoke_key(session, key_id=key_id)
        # Another request comes in meanwhile and is the one that hears of the revocation.
        assert tenant_for_digest(other_digest) == tenant.id
        return found

    # The request that loaded the key before the revocation is answered as it was loaded...
    assert db.key_cache().lookup(digest, load_then_revoke) == tenant.id
    # ...but the key is not kept: the next request with it is refused.
    assert tenant_for_digest(digest) is None
    assert tenant_for_digest(other_digest) == tenant.id

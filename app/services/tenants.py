"""Tenants and their API keys."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.auth import generate_raw_key
from app.auth import hash_key
from app.db import is_postgres
from app.errors import BadRequest
from app.errors import NotFound
from app.ids import new_id
from app.key_cache import CHANNEL as KEY_CHANNEL
from app.models import DEFAULT_RETENTION_DAYS
from app.models import ApiKey
from app.models import Tenant
from app.timeutil import isoformat
from app.timeutil import utcnow

MAX_ACTIVE_KEYS = 10
KEY_PREFIX_LENGTH = 7  # "kr_" + 4 characters: enough to recognise a key in a list


@dataclass(frozen=True)
class IssuedKey:
    """A freshly made key: the row, and the raw key that is shown exactly once."""

    key: ApiKey
    raw_key: str


def _check_retention(days: int) -> None:
    if not 1 <= days <= 36500:
        raise BadRequest("retentionDays must be between 1 and 36500.")


def create_tenant(db: Session, *, name: str, retention_days: int = DEFAULT_RETENTION_DAYS,
                  email_from: str | None = None) -> tuple[Tenant, IssuedKey]:
    """A new tenant with a first API key."""
    _check_retention(retention_days)
    now = utcnow()
    tenant = Tenant(id=new_id("ten"), name=name, retention_days=retention_days,
                    email_from=email_from, created_at=now, updated_at=now)
    db.add(tenant)
    db.flush()
    return tenant, create_key(db, tenant_id=tenant.id, name="default")


def get_tenant(db: Session, *, tenant_id: str) -> Tenant:
    """The tenant, or NotFound."""
    tenant = db.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"Tenant {tenant_id} not found.")
    return tenant


def update_tenant(db: Session, *, tenant_id: str, retention_days: int | None = None,
                  email_from: str | None = None, name: str | None = None) -> Tenant:
    """Change a tenant's settings."""
    tenant = get_tenant(db, tenant_id=tenant_id)
    if retention_days is not None:
        _check_retention(retention_days)
        tenant.retention_days = retention_days
    if email_from is not None:
        tenant.email_from = email_from
    if name is not None:
        tenant.name = name
    tenant.updated_at = utcnow()
    return tenant


def create_key(db: Session, *, tenant_id: str, name: str) -> IssuedKey:
    """A new API key for the tenant (at most ten active ones)."""
    get_tenant(db, tenant_id=tenant_id)
    if not 1 <= len(name) <= 64:
        raise BadRequest("Key names must be 1-64 characters.")
    active = db.scalar(select(func.count()).select_from(ApiKey)
                       .where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None)))
    if (active or 0) >= MAX_ACTIVE_KEYS:
        raise BadRequest(f"A tenant can have at most {MAX_ACTIVE_KEYS} active keys.")
    raw_key = generate_raw_key()
    key = ApiKey(id=new_id("key"), tenant_id=tenant_id, name=name,
                 key_prefix=raw_key[:KEY_PREFIX_LENGTH], key_hash=hash_key(raw_key),
                 created_at=utcnow())
    db.add(key)
    db.flush()
    return IssuedKey(key=key, raw_key=raw_key)


def list_keys(db: Session, *, tenant_id: str) -> list[ApiKey]:
    """The tenant's keys, oldest first, revoked ones included."""
    get_tenant(db, tenant_id=tenant_id)
    return list(db.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id)
                           .order_by(ApiKey.id)))


def revoke_key(db: Session, *, key_id: str) -> ApiKey:
    """Revoke a key; requests with it get 401 from the next request on. Idempotent."""
    key = db.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"Key {key_id} not found.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        if is_postgres(db):
            # Delivered at commit to every web process's key cache (app.key_cache).
            db.execute(text("SELECT pg_notify(:channel, :digest)"),
                       {"channel": KEY_CHANNEL, "digest": key.key_hash})
    return key


def key_view(key: ApiKey) -> dict[str, object]:
    """A key as the CLI shows it (never the raw key)."""
    return {"id": key.id, "keyId": key.id, "tenantId": key.tenant_id, "name": key.name,
            "keyPrefix": key.key_prefix, "createdAt": isoformat(key.created_at),
            "revokedAt": isoformat(key.revoked_at)}


def tenant_view(tenant: Tenant) -> dict[str, object]:
    """A tenant as the CLI shows it."""
    return {"id": tenant.id, "name": tenant.name, "retentionDays": tenant.retention_days,
            "from": tenant.email_from, "createdAt": isoformat(tenant.created_at),
            "updatedAt": isoformat(tenant.updated_at)}

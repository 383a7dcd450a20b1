"""API keys: `kr_` + 256 random bits, stored as SHA-256, one uniform 401 for every failure."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any
from typing import TypeVar

from flask import g
from flask import request
from sqlalchemy import bindparam
from sqlalchemy import select

from app import db
from app.errors import Unauthorised
from app.models import ApiKey

KEY_PREFIX = "kr_"
_UNAUTHORISED = "Missing or invalid API key."

F = TypeVar("F", bound=Callable[..., Any])


def generate_raw_key() -> str:
    """A new raw API key; shown once, never stored."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(raw_key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def bearer_token(header: str) -> str | None:
    """The key in an `Authorization` header value, if it is a bearer key that looks like one."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip().startswith(KEY_PREFIX):
        return None
    return token.strip()


_ACTIVE_KEY = select(ApiKey.tenant_id, ApiKey.key_hash).where(
    ApiKey.key_hash == bindparam("digest"), ApiKey.revoked_at.is_(None))


def _load_tenant(digest: str) -> str | None:
    # A short Core connection, not the request's ORM session: nothing is left open on it.
    with db.get_engine().connect() as connection:
        row = connection.execute(_ACTIVE_KEY, {"digest": digest}).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return str(row.tenant_id)


def tenant_for_key(raw_key: str) -> str | None:
    """The tenant id an active key belongs to, or None."""
    return tenant_for_digest(hash_key(raw_key))


def tenant_for_digest(digest: str) -> str | None:
    """The tenant id of the active key with this digest (`hash_key`), or None once revoked."""
    return db.key_cache().lookup(digest, _load_tenant)


def bearer_key_digest() -> str | None:
    """The digest of the request's bearer key, if it sent one that looks like a key."""
    token = bearer_token(request.headers.get("Authorization", ""))
    return hash_key(token) if token else None


def require_api_key(view: F) -> F:
    """Resolve the tenant from the bearer key into `g.tenant_id` (and `g.key_digest`), or 401."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        digest = bearer_key_digest()
        tenant_id = tenant_for_digest(digest) if digest else None
        if tenant_id is None:
            raise Unauthorised(_UNAUTHORISED, headers={"WWW-Authenticate": "Bearer"})
        g.tenant_id, g.key_digest = tenant_id, digest
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

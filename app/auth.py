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


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
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
    return db.key_cache().lookup(hash_key(raw_key), _load_tenant)


def require_api_key(view: F) -> F:
    """Resolve the tenant from the bearer key into `g.tenant_id`, or answer 401."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _bearer_token()
        tenant_id = tenant_for_key(token) if token else None
        if tenant_id is None:
            raise Unauthorised(_UNAUTHORISED, headers={"WWW-Authenticate": "Bearer"})
        g.tenant_id = tenant_id
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

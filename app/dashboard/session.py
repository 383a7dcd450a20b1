"""Signing in to the dashboard: a signed cookie that names the tenant and its key's digest.

The cookie holds `{"t": tenant id, "k": SHA-256 of the API key}`, signed with `SECRET_KEY` by
itsdangerous (the first key signs, every key verifies, so keys rotate as for e-mail tokens), and
never the key itself. Each request checks again that the digest is an active key of that tenant
(through the API's key cache), so revoking the key signs the dashboard out at once.

The cookie is HttpOnly, SameSite=Strict, scoped to `/dashboard`, Secure over https, and lapses
after `IDLE` without a request (requests renew it). Cross-site requests never carry it
(SameSite=Strict), and every POST must come from our own origin, which also stops a page
elsewhere from signing a browser in with someone else's key.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from typing import TypeVar
from urllib.parse import urlsplit

from flask import abort
from flask import current_app
from flask import g
from flask import make_response
from flask import redirect
from flask import request
from flask import url_for
from itsdangerous import BadSignature
from itsdangerous import URLSafeTimedSerializer
from werkzeug.wrappers import Response

from app.auth import tenant_for_digest
from app.services.tokens import timed_serializer

COOKIE = "kraiter_dashboard"
COOKIE_PATH = "/dashboard"
IDLE = timedelta(hours=12)
RENEW_AFTER = timedelta(minutes=10)
_SALT = "kraiter.dashboard"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class SignedIn:
    """Who the request is signed in as, and when the cookie was made."""

    tenant_id: str
    key_digest: str
    issued_at: float


def _serializer() -> URLSafeTimedSerializer:
    return timed_serializer(tuple(current_app.config["SETTINGS"].secret_keys), _SALT)


def _secure() -> bool:
    # Behind a TLS-terminating proxy the request itself may look like plain http.
    public_url: str = current_app.config["SETTINGS"].public_url
    return request.is_secure or public_url.startswith("https://")


def set_cookie(response: Response, *, tenant_id: str, key_digest: str) -> None:
    """Sign `response`'s browser in (or renew its cookie)."""
    value = _serializer().dumps({"t": tenant_id, "k": key_digest})
    response.set_cookie(COOKIE, str(value), max_age=int(IDLE.total_seconds()), path=COOKIE_PATH,
                        httponly=True, samesite="Strict", secure=_secure())


def clear_cookie(response: Response) -> None:
    """Sign `response`'s browser out."""
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict",
                           secure=_secure())


def current_sign_in() -> SignedIn | None:
    """The request's valid sign-in, or None (no cookie, tampered, lapsed or key revoked)."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        payload, issued = _serializer().loads(raw, max_age=int(IDLE.total_seconds()),
                                              return_timestamp=True)
    except BadSignature:  # also SignatureExpired
        return None
    tenant_id = payload.get("t") if isinstance(payload, dict) else None
    digest = payload.get("k") if isinstance(payload, dict) else None
    if not isinstance(tenant_id, str) or not isinstance(digest, str):
        return None
    if tenant_for_digest(digest) != tenant_id:
        return None
    return SignedIn(tenant_id, digest, issued.timestamp())


def same_origin() -> bool:
    """Whether the request comes from one of our own pages (or from no browser at all)."""
    claimed = request.headers.get("Origin") or request.headers.get("Referer")
    if claimed is None:
        return True  # not a browser: browsers send Origin with every POST
    host = urlsplit(claimed).netloc.lower()
    public_host = urlsplit(current_app.config["SETTINGS"].public_url).netloc.lower()
    return bool(host) and host in {request.host.lower(), public_host}


def require_same_origin(view: F) -> F:
    """403 for a POST that another site's page made."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not same_origin():
            abort(403, "This form must be sent from the dashboard itself.")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _renewed(signed_in: SignedIn, result: Any) -> Response:
    response = make_response(result)
    if time.time() - signed_in.issued_at > RENEW_AFTER.total_seconds():
        set_cookie(response, tenant_id=signed_in.tenant_id, key_digest=signed_in.key_digest)
    return response


def _safe_next(path: str) -> str | None:
    """`path` if it is one of our pages, so the sign-in form cannot send people elsewhere."""
    if path.startswith(COOKIE_PATH + "/") and "//" not in path and "\\" not in path:
        return path
    return None


def next_page() -> str:
    """Where to go after signing in: the page asked for, or the live feed."""
    return _safe_next(request.values.get("next", "")) or url_for("dashboard.feed")


def require_sign_in(view: F) -> F:
    """Set `g.tenant_id` for a signed-in request; otherwise send the browser to sign in."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signed_in = current_sign_in()
        if signed_in is None:
            target = _safe_next(request.full_path.rstrip("?"))
            response = redirect(url_for("dashboard.sign_in_form", next=target), 303)
            if request.cookies.get(COOKIE):
                clear_cookie(response)
            return response
        g.tenant_id, g.key_digest = signed_in.tenant_id, signed_in.key_digest
        return _renewed(signed_in, view(*args, **kwargs))

    return wrapper  # type: ignore[return-value]


def require_sign_in_json(view: F) -> F:
    """As `require_sign_in`, for the script's JSON endpoints: 401 instead of a redirect."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signed_in = current_sign_in()
        if signed_in is None:
            abort(401, "Sign in again.")
        g.tenant_id, g.key_digest = signed_in.tenant_id, signed_in.key_digest
        return _renewed(signed_in, view(*args, **kwargs))

    return wrapper  # type: ignore[return-value]

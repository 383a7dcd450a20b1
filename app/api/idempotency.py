"""The `Idempotency-Key` header as a view decorator (place it under `require_api_key`)."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from typing import TypeVar

from flask import Response
from flask import current_app
from flask import g
from flask import jsonify
from flask import request

from app import db
from app.errors import BadRequest
from app.services import idempotency

MAX_KEY_LENGTH = 255
# The operations that honour the header (paths as documented, without `/api`).
KEYED_OPERATIONS = frozenset({("/events", "post"), ("/events/batch", "post"), ("/send", "post")})
F = TypeVar("F", bound=Callable[..., Any])


def _fingerprint() -> str:
    """What "the same request" means: method, path (with or without `/api`) and the JSON body.

    The body is compared as parsed JSON, so a client that re-serialises it for the retry (other
    key order or spacing) still gets the first answer; a body that is not JSON is compared as
    bytes (it will be refused anyway, and refusals are not kept).
    """
    path = request.path.removeprefix("/api")
    raw = request.get_data(cache=True)
    try:
        body = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        body = raw
    digest = hashlib.sha256(f"{request.method} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def _replay(replay: idempotency.Replay) -> Response:
    response = jsonify(replay.body)
    response.status_code = replay.status_code
    response.headers["Idempotent-Replayed"] = "true"
    return response


def idempotent(view: F) -> F:
    """Replay the first answer to a retried request instead of doing the work twice."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise BadRequest(f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters.",
                             details={"Idempotency-Key": ["Invalid length."]})
        ttl = timedelta(seconds=current_app.config["SETTINGS"].idempotency_ttl_s)
        replay = idempotency.reserve(db.session, tenant_id=g.tenant_id, key=key,
                                     fingerprint=_fingerprint(), ttl=ttl)
        db.session.commit()
        if replay is not None:
            return _replay(replay)
        try:
            response = current_app.make_response(view(*args, **kwargs))
        except BaseException:
            db.session.rollback()
            idempotency.release(db.session, tenant_id=g.tenant_id, key=key)
            db.session.commit()
            raise
        if 200 <= response.status_code < 300:
            idempotency.complete(db.session, tenant_id=g.tenant_id, key=key,
                                 status_code=response.status_code, body=response.get_json())
        else:
            idempotency.release(db.session, tenant_id=g.tenant_id, key=key)
        db.session.commit()
        return response

    return wrapper  # type: ignore[return-value]

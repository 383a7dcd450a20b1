"""Short-lived tokens that open the live feed where a bearer header cannot be sent.

A browser's `EventSource` cannot set `Authorization`, so a page first trades its API key (or the
dashboard its signed-in session) for a token valid a few minutes and puts it in the stream's URL.
The token names the tenant and the digest of the key it was obtained with, so revoking the key
also refuses its tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from datetime import timedelta

from itsdangerous import BadSignature
from itsdangerous import URLSafeTimedSerializer

from app.services.tokens import timed_serializer
from app.timeutil import utcnow

LIFETIME = timedelta(minutes=5)
_SALT = "kraiter.stream"


class InvalidStreamToken(Exception):
    """Not one of our stream tokens, or expired."""


def _serializer(secret_keys: Sequence[str]) -> URLSafeTimedSerializer:
    return timed_serializer(tuple(secret_keys), _SALT)


def issue_stream_token(*, secret_keys: Sequence[str], tenant_id: str, key_digest: str
                       ) -> tuple[str, datetime]:
    """A token that opens the tenant's stream for `LIFETIME`; returns it with its expiry."""
    token = str(_serializer(secret_keys).dumps({"t": tenant_id, "k": key_digest}))
    return token, utcnow() + LIFETIME


def read_stream_token(*, secret_keys: Sequence[str], token: str) -> tuple[str, str]:
    """The (tenant id, key digest) a valid, unexpired token was issued for."""
    try:
        payload = _serializer(secret_keys).loads(token, max_age=int(LIFETIME.total_seconds()))
        return str(payload["t"]), str(payload["k"])
    except (BadSignature, KeyError, TypeError):
        raise InvalidStreamToken() from None

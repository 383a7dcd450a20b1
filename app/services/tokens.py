"""Signed tokens for links inside e-mails (open pixel, clicks, unsubscribe).

Tokens are signed, not encrypted, and carry only opaque ids — never an e-mail address. They do
not expire: mail is read years later. `SECRET_KEY` may list several keys: the first signs, all
verify, so keys rotate without breaking links already sent.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

from itsdangerous import BadSignature
from itsdangerous import URLSafeSerializer
from itsdangerous import URLSafeTimedSerializer

OPEN = "open"
CLICK = "click"
UNSUBSCRIBE = "unsubscribe"


class InvalidToken(Exception):
    """The token was not made by us (or by a key we still accept), or is for another purpose."""


def _serializer(secret_keys: Sequence[str], purpose: str) -> URLSafeSerializer:
    return _cached_serializer(tuple(secret_keys), purpose)


def _first_signs(secret_keys: Sequence[str]) -> list[str]:
    # itsdangerous signs with the *last* key of the list; our contract says the first signs.
    return list(reversed(secret_keys))


_SIGNER = {"digest_method": hashlib.sha256}


@functools.lru_cache(maxsize=64)
def _cached_serializer(secret_keys: tuple[str, ...], purpose: str) -> URLSafeSerializer:
    # Built once per key set and purpose: every e-mail signs about ten tokens.
    return URLSafeSerializer(_first_signs(secret_keys), salt=f"kraiter.{purpose}",
                             signer_kwargs=_SIGNER)


@functools.lru_cache(maxsize=64)
def timed_serializer(secret_keys: tuple[str, ...], salt: str) -> URLSafeTimedSerializer:
    """For values that expire (stream tokens, the dashboard's cookie), with the same keys and
    rotation as the links in e-mails."""
    return URLSafeTimedSerializer(_first_signs(secret_keys), salt=salt, signer_kwargs=_SIGNER)


def make_token(secret_keys: Sequence[str], purpose: str, payload: Any) -> str:
    """Sign `payload` (a small JSON value of ids) for `purpose`."""
    return str(_serializer(secret_keys, purpose).dumps(payload))


def read_token(secret_keys: Sequence[str], purpose: str, token: str) -> Any:
    """The payload of a token made by `make_token` for `purpose`, or InvalidToken."""
    try:
        return _serializer(secret_keys, purpose).loads(token)
    except BadSignature:
        raise InvalidToken(purpose) from None

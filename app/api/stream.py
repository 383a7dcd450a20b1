"""The live feed over Server-Sent Events, and the tokens that open it from a browser."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

from flask import Response
from flask import current_app
from flask import g
from flask import request

from app.api.blueprint import api
from app.api.blueprint import document
from app.auth import bearer_key_digest
from app.auth import require_api_key
from app.auth import tenant_for_digest
from app.db import read_only_connection
from app.errors import ServiceUnavailable
from app.errors import Unauthorised
from app.live_feed import FeedHub
from app.live_feed import FeedItem
from app.live_feed import StreamLimitReached
from app.live_feed import follow
from app.schemas.events import EventStreamQuery
from app.schemas.events import StreamTokenSchema
from app.services import feed
from app.services.stream_tokens import InvalidStreamToken
from app.services.stream_tokens import issue_stream_token
from app.services.stream_tokens import read_stream_token
from app.timeutil import isoformat

_query = EventStreamQuery()
_UNAUTHORISED = "Missing or invalid API key or stream token."
_RECONNECT_MS = 2000


def _settings() -> Any:
    return current_app.config["SETTINGS"]


def _hub() -> FeedHub:
    hub: FeedHub = current_app.extensions["live_feed"]
    return hub


document("/events/stream/token", "post", "Get a token that opens the live feed", tag="events",
         response=StreamTokenSchema)


@api.post("/events/stream/token")
@require_api_key
def stream_token() -> Any:
    """A token for `GET /api/events/stream?token=`, for clients (browsers) that cannot set
    headers on an EventSource; valid for five minutes, refused once its key is revoked."""
    token, expires_at = issue_stream_token(secret_keys=_settings().secret_keys,
                                           tenant_id=g.tenant_id, key_digest=g.key_digest)
    return {"token": token, "expiresAt": isoformat(expires_at)}


def _credentials(token: str | None) -> tuple[str, str]:
    """(tenant id, key digest) from the bearer key or the stream token; 401 otherwise."""
    digest = bearer_key_digest()
    if digest is None and token:
        try:
            _, digest = read_stream_token(secret_keys=_settings().secret_keys, token=token)
        except InvalidStreamToken:
            digest = None
    tenant_id = tenant_for_digest(digest) if digest else None
    if digest is None or tenant_id is None:
        raise Unauthorised(_UNAUTHORISED, headers={"WWW-Authenticate": "Bearer"})
    return tenant_id, digest


def _resume_position(tenant_id: str, last_event_id: str | None) -> int | None:
    if not last_event_id:
        return None
    with read_only_connection() as connection:
        return feed.position_of(connection, tenant_id=tenant_id, event_id=last_event_id.strip())


def _filter(query: dict[str, Any]) -> Callable[[FeedItem], bool]:
    name, email = query.get("event"), query.get("email")
    return lambda item: ((name is None or item.name == name)
                         and (email is None or item.email == email))


document("/events/stream", "get", "Live feed of stored events (Server-Sent Events)",
         tag="events", query=EventStreamQuery, media_type="text/event-stream")


@api.get("/events/stream")
def stream_events() -> Any:
    """The tenant's events as they are stored, oldest first, as `text/event-stream`.

    Each message's `id` is the event id; send it back as `Last-Event-ID` (browsers do) or
    `?lastEventId=` to resume right after it. Without one the stream starts with what is stored
    from now on. A `: ping` comment comes every few seconds; the stream ends if the key is revoked.
    """
    query = _query.load(request.args)
    tenant_id, digest = _credentials(query.get("token"))
    resume_after = _resume_position(
        tenant_id, request.headers.get("Last-Event-ID") or query.get("lastEventId"))
    hub = _hub()
    try:
        subscription = hub.subscribe(tenant_id)
    except StreamLimitReached:
        raise ServiceUnavailable("Too many open streams on this server; retry shortly.",
                                 headers={"Retry-After": "5"}) from None
    settings = _settings()
    matches = _filter(query)

    def still_allowed() -> bool:
        return tenant_for_digest(digest) == tenant_id

    def body() -> Iterator[str]:
        yield f"retry: {_RECONNECT_MS}\n: connected\n\n"
        for batch in follow(hub, subscription, after=subscription.start if resume_after is None
                            else resume_after, heartbeat_s=settings.stream_heartbeat_s,
                            still_allowed=still_allowed):
            if not batch:
                yield ": ping\n\n"
            elif text := "".join(item.message for item in batch if matches(item)):
                yield text  # one write for the whole batch

    response = Response(body(), mimetype="text/event-stream")
    # Also when the client is gone before the body started (the generator then never runs).
    response.call_on_close(lambda: hub.unsubscribe(subscription))
    response.headers["Cache-Control"] = "no-cache, no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx and most proxies: do not buffer
    return response

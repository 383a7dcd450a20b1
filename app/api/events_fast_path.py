"""`POST /api/events` (and `/events`) in its common case, answered before Flask is involved.

Single events are the bulk of the traffic, and Flask's own work (request and app contexts, URL
matching, hooks, the response object) costs more web CPU than the event itself. So this WSGI
layer sits in front of the Flask app and takes the one case that needs none of it: a known
bearer key, no `Idempotency-Key`, and a body that `plain_track_event` proves valid. It stamps
and enqueues the event exactly as the view does (`ingest.accept_event`, the same batcher, so the
same ledger) and answers the same 202, byte for byte.

Anything else goes to Flask untouched: an unknown or revoked key, an error of any kind, a body
the plain check is not sure about. Flask then answers it, errors included, so they cannot differ
from what the view says. The only answer made here besides the 202 is a refusal by the event
queue, after the event was handed over (so it cannot be handed over twice); Flask's own error
handler words that one too.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from flask import Flask
from prometheus_client import Counter
from prometheus_client import Histogram

from app import db
from app.api.events import track_event
from app.auth import bearer_token
from app.auth import hash_key
from app.auth import tenant_for_digest
from app.errors import ServiceUnavailable
from app.observability import HTTP_DURATION
from app.observability import HTTP_REQUESTS
from app.schemas.events import plain_track_event
from app.services import ingest

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
PATHS = frozenset({"/api/events", "/events"})
STATUS = "202 ACCEPTED"  # as werkzeug words it
ENDPOINT = track_event.__name__  # the metrics label Flask's requests get (the view's name)


class EventFastPath:
    """WSGI middleware: accept common single events itself, hand everything else to Flask."""

    def __init__(self, app: Flask, fallback: WSGIApp) -> None:
        self._app = app
        self.fallback = fallback
        settings = app.config["SETTINGS"]
        # Flask refuses bodies over MAX_CONTENT_LENGTH before the view's own limit applies.
        self._max_bytes = min(settings.max_body_bytes, app.config["MAX_CONTENT_LENGTH"])
        self._metrics: tuple[Counter, Histogram] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if (environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") not in PATHS
                or "HTTP_IDEMPOTENCY_KEY" in environ):
            return self.fallback(environ, start_response)
        started = time.perf_counter()
        batcher = self._app.extensions["ingest_batcher"]
        with batcher.expecting():
            message = self._accept(environ)
            if message is None:
                return self.fallback(environ, start_response)
            try:
                batcher.submit([message])
            except ServiceUnavailable as refusal:
                return self._refuse(environ, start_response, refusal)
        body = (self._app.json.dumps(ingest.accepted_view(message), separators=(",", ":"))
                + "\n").encode()
        try:
            self._count(time.perf_counter() - started)
        except Exception:  # the event is queued: a metrics hiccup must not turn that into a 500
            log.warning("event_fast_path_metrics_failed", exc_info=True)
        start_response(STATUS, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body)))])
        return [body]

    def _accept(self, environ: dict[str, Any]) -> dict[str, Any] | None:
        """The event message, if this request is the common case; None hands it to Flask."""
        if self._app.debug:  # debug mode indents JSON answers
            return None
        try:
            raw = _read_body(environ, self._max_bytes)
            return None if raw is None else self._message(environ, raw)
        except Exception:  # Flask does it all again and answers whatever went wrong
            log.debug("event_fast_path_deferred", exc_info=True)
            return None

    def _message(self, environ: dict[str, Any], raw: bytes) -> dict[str, Any] | None:
        token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
        tenant_id = tenant_for_digest(hash_key(token)) if token else None
        if tenant_id is None:
            return None
        # Plain `json.loads`, unlike the view's reader, lets NaN, infinities and huge floats by;
        # the plain check takes none of them (floats only as finite property values).
        data = plain_track_event(json.loads(raw))
        if data is None:
            return None
        # A session is only used to look up a contactId, which the plain check never lets by.
        return ingest.accept_event(db.session, tenant_id=tenant_id, data=data)

    def _refuse(self, environ: dict[str, Any], start_response: Callable[..., Any],
                refusal: ServiceUnavailable) -> Iterable[bytes]:
        """Answer a refusal the way the view's would be: through Flask's request handling."""
        app = self._app
        with app.request_context(environ):
            app.preprocess_request()
            response = app.finalize_request(app.handle_user_exception(refusal))
        return response(environ, start_response)

    def _count(self, seconds: float) -> None:
        # Labelled children are looked up once per process: `labels()` costs a few µs a call.
        if self._metrics is None:
            self._metrics = (
                HTTP_REQUESTS.labels(method="POST", endpoint=ENDPOINT, status="202"),
                HTTP_DURATION.labels(endpoint=ENDPOINT))
        requests, duration = self._metrics
        requests.inc()
        duration.observe(seconds)


def _read_body(environ: dict[str, Any], max_bytes: int) -> bytes | None:
    """The body, if it has a Content-Length within the limit; the stream is replaced by a copy,
    so that Flask reads the same bytes if the request goes on to it."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if not 0 < length <= max_bytes or "HTTP_TRANSFER_ENCODING" in environ:
        return None
    raw: bytes = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(raw)
    return raw if len(raw) == length else None


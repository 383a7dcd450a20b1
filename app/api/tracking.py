"""Public tracking endpoints: open pixel, click redirect, unsubscribe pages (no API key).

Each hit is written synchronously in one short transaction (send row locked, lifecycle step,
commit), so an open, a click or an unsubscribe is stored before the answer leaves. Every GET is
recorded, bots included; only HEAD (link checkers, some scanners) records nothing.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from flask import Response
from flask import current_app
from flask import redirect
from flask import request
from flask import url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.urls import iri_to_uri

from app import db
from app.api import public_pages
from app.api.blueprint import public
from app.services import tokens
from app.services import tracking

log = logging.getLogger(__name__)

# A 1x1 transparent GIF, 43 bytes.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")


def _secret_keys() -> tuple[str, ...]:
    keys: tuple[str, ...] = current_app.config["SETTINGS"].secret_keys
    return keys


def _recording() -> bool:
    return request.method != "HEAD"


@public.get("/t/o/<token>")
def open_pixel(token: str) -> Any:
    """Record an open and answer the pixel; a bad token gets the pixel too, recording nothing."""
    send_id = tracking.send_id_from_token(_secret_keys(), tokens.OPEN, token)
    if send_id is not None and _recording():
        try:
            tracking.record_open(db.session, send_id=send_id)
            db.session.commit()
        except SQLAlchemyError:
            # The image must load whatever happens; a lost open is logged, not shown.
            db.session.rollback()
            log.exception("open_not_recorded send_id=%s", send_id)
    return Response(PIXEL, mimetype="image/gif", headers={"Cache-Control": "no-store"})


@public.get("/t/c/<token>")
def follow_click(token: str) -> Any:
    """Record a click and redirect to the link's original URL, as stored with the send."""
    click = tracking.click_from_token(_secret_keys(), token)
    if click is None:
        return public_pages.link_not_found()
    send_id, index = click
    target = tracking.click_target(db.session, send_id=send_id, index=index,
                                   record=_recording())
    db.session.commit()
    if target is None:
        return public_pages.link_not_found()
    response = redirect(iri_to_uri(target), 302)
    response.headers["Cache-Control"] = "no-store"  # each click must reach us to be counted
    return response


@public.get("/unsubscribe/<token>")
def unsubscribe_page(token: str) -> Any:
    """The confirmation page; changes nothing (link scanners follow GETs)."""
    send_id = tracking.send_id_from_token(_secret_keys(), tokens.UNSUBSCRIBE, token)
    done = None if send_id is None else tracking.is_unsubscribed(db.session, send_id=send_id)
    db.session.rollback()  # read only
    if done is None:
        return public_pages.link_not_found()
    if done:
        return public_pages.already_unsubscribed()
    return public_pages.unsubscribe_confirmation(url_for("public.unsubscribe", token=token))


@public.post("/unsubscribe/<token>")
def unsubscribe(token: str) -> Any:
    """Unsubscribe the contact: the page's form or a mail client's one-click POST (RFC 8058).

    The token alone authorises it (RFC 8058 forbids cookies and credentials), any body is
    accepted, and the answer is 200 directly because redirected POSTs break one-click.
    """
    send_id = tracking.send_id_from_token(_secret_keys(), tokens.UNSUBSCRIBE, token)
    if send_id is None or not tracking.unsubscribe(db.session, send_id=send_id):
        db.session.rollback()
        return public_pages.link_not_found()
    db.session.commit()
    return public_pages.unsubscribed()

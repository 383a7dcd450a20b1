"""The dashboard's pages: each loads through the services and renders one template.

Pages are plain HTML that work without the script; `static/dashboard.js` only makes the live
feed live. Every answer carries a strict Content-Security-Policy: scripts, styles and requests
from this origin only, nothing inline, never framed.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import g
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from app import db
from app.auth import KEY_PREFIX
from app.auth import hash_key
from app.auth import tenant_for_key
from app.dashboard import present
from app.dashboard import session
from app.errors import APIError
from app.errors import NotFound
from app.errors import error_response
from app.schemas.fields import normalise_email
from app.schemas.metrics import MetricsQuery
from app.services import contacts
from app.services import enrolments
from app.services import events
from app.services import ingest
from app.services import metrics
from app.services import sending
from app.services import sequences
from app.services import tenants
from app.services.feed import latest_stored_event_id
from app.services.stream_tokens import issue_stream_token
from app.timeutil import isoformat

dashboard = Blueprint("dashboard", __name__, url_prefix="/dashboard",
                      template_folder="templates", static_folder="static")

FEED_SIZE = 50
PAGE_SIZE = 50
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
}
_metrics_query = MetricsQuery()

dashboard.add_app_template_filter(present.short_time, "short_time")
dashboard.add_app_template_filter(present.compact_json, "compact_json")
dashboard.add_app_template_filter(present.percent, "percent")


@dashboard.after_request
def _security_headers(response: Response) -> Response:
    response.headers.update(_HEADERS)
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"  # tenant data: never kept by a cache
    return response


def _wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) \
        == "application/json"


def _error_page(status: int, code: str, title: str, message: str) -> Any:
    if _wants_json():  # the script's requests: the API's error envelope
        return error_response(status, code, message)
    # A signed-in person keeps the navigation (not after a server error: the database may be why).
    tenant = _tenant() if status < 500 else None
    return render_template("dashboard/error.html", title=title, message=message,
                           tenant=tenant), status


@dashboard.errorhandler(APIError)
def _api_error(error: APIError) -> Any:
    title = "Not found" if error.status == 404 else "Something is not right"
    return _error_page(error.status, error.code, title, error.message)


@dashboard.errorhandler(ValidationError)
def _validation_error(_error: ValidationError) -> Any:
    return _error_page(400, "VALIDATION_ERROR", "Not valid",
                       "The address has a value the page cannot use.")


_HTTP_CODES = {401: "UNAUTHORISED", 403: "FORBIDDEN", 404: "NOT_FOUND",
               405: "METHOD_NOT_ALLOWED"}


@dashboard.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    status = error.code or 500
    return _error_page(status, _HTTP_CODES.get(status, "BAD_REQUEST"), error.name,
                       error.description or error.name)


def _page(template: str, **context: Any) -> str:
    return render_template(f"dashboard/{template}", tenant=_tenant(), **context)


def _older(cursor: str | None) -> str | None:
    """This page's address for the next (older) page, keeping its filters."""
    if cursor is None:
        return None
    values: dict[str, Any] = {**(request.view_args or {}), **request.args.to_dict(),
                              "cursor": cursor}
    return url_for(str(request.endpoint), **values)


def _tenant() -> Any:
    tenant_id = getattr(g, "tenant_id", None)
    return tenants.get_tenant(db.session, tenant_id=tenant_id) if tenant_id else None


# --- signing in and out --------------------------------------------------------------------------


@dashboard.get("/")
def home() -> Any:
    """The live feed when signed in, else the sign-in form."""
    signed_in = session.current_sign_in() is not None
    return redirect(url_for("dashboard.feed" if signed_in else "dashboard.sign_in_form"), 303)


@dashboard.get("/sign-in")
def sign_in_form() -> Any:
    """The sign-in form."""
    if session.current_sign_in() is not None:
        return redirect(session.next_page(), 303)
    return render_template("dashboard/sign_in.html", next=request.args.get("next", ""))


@dashboard.post("/sign-in")
@session.require_same_origin
def sign_in() -> Any:
    """Check the API key and sign the browser in; the key itself is not kept."""
    raw_key = request.form.get("api_key", "").strip()
    tenant_id = tenant_for_key(raw_key) if raw_key.startswith(KEY_PREFIX) else None
    if tenant_id is None:
        return render_template("dashboard/sign_in.html", next=request.form.get("next", ""),
                               error="That API key is not valid (or has been revoked)."), 401
    response = redirect(session.next_page(), 303)
    session.set_cookie(response, tenant_id=tenant_id, key_digest=hash_key(raw_key))
    return response


@dashboard.post("/sign-out")
@session.require_same_origin
def sign_out() -> Any:
    """Forget the sign-in."""
    response = redirect(url_for("dashboard.sign_in_form"), 303)
    session.clear_cookie(response)
    return response


# --- live feed -----------------------------------------------------------------------------------


def _feed_filters() -> tuple[str | None, str | None, str | None]:
    """The feed's (event name, e-mail, problem) from the query string."""
    name = request.args.get("event", "").strip() or None
    email = request.args.get("email", "").strip() or None
    if email is None:
        return name, None, None
    try:
        return name, normalise_email(email), None
    except ValidationError:
        return name, email, "That is not an e-mail address."


def _latest_events(name: str | None, email: str | None) -> list[Any]:
    """The newest events matching the filters (none for an e-mail no contact has)."""
    contact = contacts.resolve_contact_filter(db.session, tenant_id=g.tenant_id,
                                              contact_id=None, email=email)
    if contact is contacts.NO_SUCH_CONTACT:
        return []
    page = events.list_events(db.session, tenant_id=g.tenant_id, name=name, limit=FEED_SIZE,
                              contact_id=contact if isinstance(contact, str) else None)
    return [events.event_view(item) for item in page.items]


@dashboard.get("/feed")
@session.require_sign_in
def feed() -> Any:
    """The tenant's latest events, newest first; the script adds new ones as they are stored."""
    name, email, problem = _feed_filters()
    # Read before the events, so the stream resumes at or before the newest one listed.
    resume = latest_stored_event_id(db.session, tenant_id=g.tenant_id)
    return _page("feed.html", events=[] if problem else _latest_events(name, email),
                 event_filter=name or "", email_filter=email or "", problem=problem,
                 resume_from=resume or "", stream_url=url_for("api.stream_events"))


@dashboard.post("/stream-token")
@session.require_same_origin
@session.require_sign_in_json
def stream_token() -> Any:
    """A fresh token that opens the live feed's stream for a few minutes."""
    token, expires_at = issue_stream_token(
        secret_keys=current_app.config["SETTINGS"].secret_keys, tenant_id=g.tenant_id,
        key_digest=g.key_digest)
    return {"token": token, "expiresAt": isoformat(expires_at)}


# --- contacts ------------------------------------------------------------------------------------


@dashboard.get("/contacts")
@session.require_sign_in
def contact_list() -> Any:
    """Contacts, newest first, optionally searched by e-mail."""
    search = request.args.get("search", "").strip() or None
    page = contacts.list_contacts(db.session, tenant_id=g.tenant_id, search=search,
                                  limit=PAGE_SIZE, cursor=request.args.get("cursor") or None)
    return _page("contacts.html", contacts=[contacts.contact_view(c) for c in page.items],
                 search=search or "", older_url=_older(page.next_cursor))


@dashboard.get("/contacts/<ref>")
@session.require_sign_in
def contact(ref: str) -> Any:
    """One contact: properties, event timeline, sends and enrolments."""
    found = contacts.find_contact(db.session, tenant_id=g.tenant_id, ref=ref)
    timeline = events.list_events(db.session, tenant_id=g.tenant_id, contact_id=found.id,
                                  limit=PAGE_SIZE, cursor=request.args.get("cursor") or None)
    sends = sending.list_sends(db.session, tenant_id=g.tenant_id, contact_id=found.id,
                               limit=PAGE_SIZE)
    joined = enrolments.list_enrolments(db.session, tenant_id=g.tenant_id, contact_id=found.id,
                                        limit=PAGE_SIZE)
    return _page("contact.html", contact=contacts.contact_view(found),
                 events=[events.event_view(item) for item in timeline.items],
                 older_url=_older(timeline.next_cursor),
                 sends=[sending.send_view(send) for send in sends.items],
                 enrolments=[enrolments.enrolment_view(item) for item in joined.items])


# --- sequences -----------------------------------------------------------------------------------


@dashboard.get("/sequences")
@session.require_sign_in
def sequence_list() -> Any:
    """Every sequence with its status and enrolments by status."""
    page = sequences.list_sequences(db.session, tenant_id=g.tenant_id, status=None,
                                    limit=PAGE_SIZE, cursor=request.args.get("cursor") or None)
    counts = enrolments.counts_by_status(db.session, tenant_id=g.tenant_id,
                                      sequence_ids=[item.id for item in page.items])
    return _page("sequences.html", sequences=page.items, counts=counts,
                 statuses=enrolments.STATUSES, older_url=_older(page.next_cursor))


@dashboard.get("/sequences/<sequence_id>")
@session.require_sign_in
def sequence(sequence_id: str) -> Any:
    """One sequence: its steps, enrolments by status, upcoming steps and latest enrolments."""
    found = sequences.get_sequence(db.session, tenant_id=g.tenant_id, sequence_id=sequence_id)
    definition = sequences.load_canonical(sequences.current_version(db.session, found).canonical)
    counts = enrolments.counts_by_status(db.session, tenant_id=g.tenant_id,
                                      sequence_ids=[sequence_id])[sequence_id]
    upcoming = enrolments.list_scheduled(db.session, tenant_id=g.tenant_id, limit=PAGE_SIZE,
                                         sequence_id=sequence_id)
    latest = enrolments.list_enrolments(db.session, tenant_id=g.tenant_id,
                                        sequence_id=sequence_id, limit=PAGE_SIZE)
    emails = ingest.contact_emails(db.session, tenant_id=g.tenant_id,
                                   contact_ids=[item.contact_id for item in latest.items])
    return _page("sequence.html", sequence=found, counts=counts,
                 triggers=present.describe_triggers(definition),
                 steps=[present.describe_step(step) for step in definition.steps],
                 upcoming=upcoming.items, emails=emails,
                 enrolments=[enrolments.enrolment_view(item) for item in latest.items])


# --- sends and metrics ---------------------------------------------------------------------------


@dashboard.get("/sends")
@session.require_sign_in
def send_list() -> Any:
    """Sends, newest first, optionally of one status."""
    status = request.args.get("status") or None
    if status not in (None, *sending.API_STATUSES):
        raise NotFound(f"There is no send status {status}.")
    page = sending.list_sends(db.session, tenant_id=g.tenant_id, status=status,
                              limit=PAGE_SIZE, cursor=request.args.get("cursor") or None)
    return _page("sends.html", sends=[sending.send_view(send) for send in page.items],
                 status=status or "", statuses=sending.API_STATUSES,
                 older_url=_older(page.next_cursor))


@dashboard.get("/metrics")
@session.require_sign_in
def metrics_page() -> Any:
    """The e-mail metrics of `GET /api/metrics`, drawn as a chart, with totals and rates."""
    problem = None
    try:
        window = _metrics_query.load(request.args)
    except ValidationError:
        problem, window = "Those dates cannot be shown; showing the last 30 days.", \
            _metrics_query.load({})
    answer = metrics.email_metrics(db.session, tenant_id=g.tenant_id, window=window)
    series = answer["timeseries"]
    # A wide chart and a narrow one for phones (CSS shows one), so labels stay legible on both.
    charts = [present.line_chart(series, name="wide", period=window.period, width=720,
                                 height=300, labels=8),
              present.line_chart(series, name="narrow", period=window.period, width=360,
                                 height=260, labels=4)]
    return _page("metrics.html", metrics=answer, charts=charts, problem=problem,
                 series=present.SERIES, rates=present.RATE_LABELS, periods=metrics.PERIODS,
                 start=(request.args.get("from") or ""), end=(request.args.get("to") or ""))



@dashboard.get("/<path:_unknown>")
def unknown_page(_unknown: str) -> Any:
    """Any other address under /dashboard: the dashboard's own 404 page, not the API's JSON."""
    return _error_page(404, "NOT_FOUND", "Not found", "There is no such page in the dashboard.")

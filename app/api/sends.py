"""Transactional sends (contract §6): POST /send, GET /sends, GET /sends/:id."""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app
from flask import g
from flask import request

from app import db
from app.api.blueprint import api
from app.api.blueprint import document
from app.api.idempotency import idempotent
from app.auth import require_api_key
from app.errors import NotFound
from app.errors import ServiceUnavailable
from app.ingest_batcher import IngestBatcher
from app.schemas.common import read_json_object
from app.schemas.sends import AcceptedSendSchema
from app.schemas.sends import SendListQuery
from app.schemas.sends import SendPageSchema
from app.schemas.sends import SendRequestSchema
from app.schemas.sends import SendSchema
from app.services import contacts
from app.services import sending
from tasks.sends import BATCH_SIZE
from tasks.sends import enqueue_delivery

log = logging.getLogger(__name__)
_request = SendRequestSchema()
_list_query = SendListQuery()


def _publish(items: list[dict[str, Any]]) -> None:
    enqueue_delivery([item["id"] for item in items])


def _enqueue(send_id: str) -> None:
    """Hand the committed send to a worker, grouped with concurrent requests' sends.

    The same group commit as events (app/ingest_batcher.py): under load, one `deliver_many`
    message carries many sends, which is what the worker's per-message cost needs. If the
    broker cannot be reached the send stays `queued` in the database and the lost-send sweep
    enqueues it; the request still succeeds, so the client does not send it twice.
    """
    batcher = current_app.extensions.get("send_batcher")
    if batcher is None:
        settings = current_app.config["SETTINGS"]
        batcher = current_app.extensions.setdefault("send_batcher", IngestBatcher(
            _publish, max_batch=BATCH_SIZE, linger_s=settings.ingest_linger_ms / 1000,
            timeout_s=settings.ingest_publish_timeout_s))
    try:
        batcher.submit([{"id": send_id}])
    except ServiceUnavailable:
        log.warning("send_enqueue_timed_out %s", send_id, extra={"send_id": send_id})

document("/send", "post", "Send a transactional e-mail", tag="sends", status=202,
         body=SendRequestSchema, response=AcceptedSendSchema)


@api.post("/send")
@require_api_key
@idempotent
def send_email() -> Any:
    """Queue one e-mail from a template; a worker sends it."""
    body = read_json_object(request, max_bytes=current_app.config["SETTINGS"].max_body_bytes)
    data = _request.load(body)
    send = sending.send_transactional(
        db.session, tenant_id=g.tenant_id, to=data["to"], template_id=data["templateId"],
        variables=data["variables"], ignore_unsubscribe=data["ignoreUnsubscribe"])
    db.session.commit()
    _enqueue(send.id)  # only now: the worker must find the committed row
    return sending.accepted_view(send), 202


document("/sends", "get", "List sends, newest first", tag="sends", query=SendListQuery,
         response=SendPageSchema)


@api.get("/sends")
@require_api_key
def list_sends() -> Any:
    """A page of the tenant's sends, newest first."""
    query = _list_query.load(request.args)
    contact_id = None
    if query.get("contactId"):
        contact_id = contacts.find_contact(db.session, tenant_id=g.tenant_id,
                                           ref=query["contactId"]).id
    page = sending.list_sends(db.session, tenant_id=g.tenant_id, status=query.get("status"),
                              contact_id=contact_id, template_id=query.get("templateId"),
                              limit=query["limit"], cursor=query["cursor"])
    return {"data": [sending.send_view(send) for send in page.items],
            "nextCursor": page.next_cursor}


document("/sends/{id}", "get", "Get one send", tag="sends", response=SendSchema)


@api.get("/sends/<send_id>")
@require_api_key
def get_send(send_id: str) -> Any:
    """One of the tenant's sends (another tenant's id is a 404)."""
    if "\x00" in send_id:  # no id has one, and PostgreSQL refuses it as a parameter
        raise NotFound("Send not found.")
    return sending.send_view(sending.get_send(db.session, tenant_id=g.tenant_id,
                                              send_id=send_id))

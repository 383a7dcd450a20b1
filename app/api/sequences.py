"""Sequences and enrolments (contract §5): upsert, lifecycle, enrolments, scheduled steps."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask import g
from flask import request
from marshmallow import ValidationError

from app import db
from app.api.blueprint import api
from app.api.blueprint import document
from app.auth import require_api_key
from app.errors import NotFound
from app.schemas.common import read_json_object
from app.schemas.sequences import SEQUENCE_ID_RULE
from app.schemas.sequences import EnrolmentListQuery
from app.schemas.sequences import EnrolmentPageSchema
from app.schemas.sequences import EnrolmentSchema
from app.schemas.sequences import EnrolRequestSchema
from app.schemas.sequences import ScheduledPageSchema
from app.schemas.sequences import ScheduledQuery
from app.schemas.sequences import SequenceListQuery
from app.schemas.sequences import SequencePageSchema
from app.schemas.sequences import SequencePutSchema
from app.schemas.sequences import SequenceSchema
from app.schemas.sequences import valid_sequence_id
from app.services import contacts
from app.services import enrolments
from app.services import sequences
from tasks import sequences as sequence_tasks  # noqa: F401  (publishes wakeups after commit)

_put = SequencePutSchema()
_list_query = SequenceListQuery()
_enrol = EnrolRequestSchema()
_enrolment_query = EnrolmentListQuery()
_scheduled_query = ScheduledQuery()


def _body() -> dict[str, Any]:
    return read_json_object(request, max_bytes=current_app.config["SETTINGS"].max_body_bytes)


def _known_id(sequence_id: str) -> str:
    # An id that breaks the naming rule cannot have been stored: answer as for any unknown id.
    if not valid_sequence_id(sequence_id):
        raise NotFound(f"Sequence {sequence_id} not found.")
    return sequence_id


def _view(sequence: Any) -> dict[str, Any]:
    return sequences.sequence_view(db.session, sequence)


document("/sequences/{id}", "put", "Create (draft, 201) or update a sequence; a changed "
         "definition makes a new version", tag="sequences", body=SequencePutSchema,
         response=SequenceSchema)


@api.put("/sequences/<sequence_id>")
@require_api_key
def put_sequence(sequence_id: str) -> Any:
    if not valid_sequence_id(sequence_id):
        raise ValidationError({"id": [f"Sequence ids are {SEQUENCE_ID_RULE}"]})
    data = _put.load(_body())
    if data.pop("id", sequence_id) != sequence_id:
        raise ValidationError({"id": ["Must match the id in the path."]})
    sequence, created = sequences.upsert_sequence(db.session, tenant_id=g.tenant_id,
                                                  sequence_id=sequence_id, **data)
    body = _view(sequence)
    db.session.commit()
    return body, 201 if created else 200


document("/sequences", "get", "List sequences in id order", tag="sequences",
         query=SequenceListQuery, response=SequencePageSchema)


@api.get("/sequences")
@require_api_key
def list_sequences() -> Any:
    query = _list_query.load(request.args)
    page = sequences.list_sequences(db.session, tenant_id=g.tenant_id, status=query["status"],
                                    limit=query["limit"], cursor=query["cursor"])
    return {"data": [_view(sequence) for sequence in page.items],
            "nextCursor": page.next_cursor}


document("/sequences/{id}", "get", "Get a sequence", tag="sequences", response=SequenceSchema)


@api.get("/sequences/<sequence_id>")
@require_api_key
def get_sequence(sequence_id: str) -> Any:
    return _view(sequences.get_sequence(db.session, tenant_id=g.tenant_id,
                                        sequence_id=_known_id(sequence_id)))


document("/sequences/{id}", "delete", "Delete a sequence; its active enrolments exit",
         tag="sequences", status=204)


@api.delete("/sequences/<sequence_id>")
@require_api_key
def delete_sequence(sequence_id: str) -> Any:
    sequences.delete_sequence(db.session, tenant_id=g.tenant_id,
                              sequence_id=_known_id(sequence_id))
    db.session.commit()
    return "", 204


def _transition(sequence_id: str, action: str) -> Any:
    sequence = sequences.transition(db.session, tenant_id=g.tenant_id,
                                    sequence_id=_known_id(sequence_id), action=action)
    body = _view(sequence)
    db.session.commit()
    return body


for _action, _summary in (
        ("activate", "Activate a draft (422 naming missing templates)"),
        ("pause", "Pause: enrolments are held where they are"),
        ("resume", "Resume a paused sequence: held enrolments continue"),
        ("archive", "Archive: no more enrolments; active ones exit")):
    document(f"/sequences/{{id}}/{_action}", "post", _summary, tag="sequences",
             response=SequenceSchema)


@api.post("/sequences/<sequence_id>/activate")
@require_api_key
def activate_sequence(sequence_id: str) -> Any:
    return _transition(sequence_id, "activate")


@api.post("/sequences/<sequence_id>/pause")
@require_api_key
def pause_sequence(sequence_id: str) -> Any:
    return _transition(sequence_id, "pause")


@api.post("/sequences/<sequence_id>/resume")
@require_api_key
def resume_sequence(sequence_id: str) -> Any:
    return _transition(sequence_id, "resume")


@api.post("/sequences/<sequence_id>/archive")
@require_api_key
def archive_sequence(sequence_id: str) -> Any:
    return _transition(sequence_id, "archive")


document("/sequences/{id}/enrolments", "post", "Enrol a contact by hand (the only way into "
         "`api: true` sequences); 409 when the reenrol policy refuses", tag="sequences",
         status=201, body=EnrolRequestSchema, response=EnrolmentSchema)


@api.post("/sequences/<sequence_id>/enrolments")
@require_api_key
def enrol_contact(sequence_id: str) -> Any:
    data = _enrol.load(_body())
    enrolment = enrolments.enrol(db.session, tenant_id=g.tenant_id,
                                 sequence_id=_known_id(sequence_id), email=data.get("email"),
                                 contact_id=data.get("contactId"))
    db.session.commit()  # publishes the first e-mail and the next wake-up
    return enrolments.enrolment_view(enrolment), 201


document("/sequences/{id}/enrolments", "get", "List a sequence's enrolments, newest first",
         tag="sequences", query=EnrolmentListQuery, response=EnrolmentPageSchema)


@api.get("/sequences/<sequence_id>/enrolments")
@require_api_key
def list_sequence_enrolments(sequence_id: str) -> Any:
    query = _enrolment_query.load(request.args)
    sequences.get_sequence(db.session, tenant_id=g.tenant_id, sequence_id=_known_id(sequence_id))
    page = enrolments.list_enrolments(db.session, tenant_id=g.tenant_id,
                                      sequence_id=sequence_id, status=query["status"],
                                      limit=query["limit"], cursor=query["cursor"])
    return {"data": [enrolments.enrolment_view(row) for row in page.items],
            "nextCursor": page.next_cursor}


document("/sequences/{id}/enrolments/{enrolmentId}", "delete", "Exit an enrolment by hand "
         "(its pending step never runs)", tag="sequences", response=EnrolmentSchema)


@api.delete("/sequences/<sequence_id>/enrolments/<enrolment_id>")
@require_api_key
def exit_enrolment(sequence_id: str, enrolment_id: str) -> Any:
    enrolment = enrolments.exit_enrolment(db.session, tenant_id=g.tenant_id,
                                          sequence_id=_known_id(sequence_id),
                                          enrolment_id=enrolment_id)
    body = enrolments.enrolment_view(enrolment)
    db.session.commit()
    return body


document("/contacts/{id}/enrolments", "get", "List a contact's enrolments (id or e-mail), "
         "newest first", tag="contacts", query=EnrolmentListQuery, response=EnrolmentPageSchema)


@api.get("/contacts/<ref>/enrolments")
@require_api_key
def list_contact_enrolments(ref: str) -> Any:
    query = _enrolment_query.load(request.args)
    contact = contacts.find_contact(db.session, tenant_id=g.tenant_id, ref=ref)
    page = enrolments.list_enrolments(db.session, tenant_id=g.tenant_id, contact_id=contact.id,
                                      status=query["status"], limit=query["limit"],
                                      cursor=query["cursor"])
    return {"data": [enrolments.enrolment_view(row) for row in page.items],
            "nextCursor": page.next_cursor}


document("/scheduled", "get", "Pending sequence steps, earliest first", tag="sequences",
         query=ScheduledQuery, response=ScheduledPageSchema)


@api.get("/scheduled")
@require_api_key
def list_scheduled() -> Any:
    query = _scheduled_query.load(request.args)
    page = enrolments.list_scheduled(db.session, tenant_id=g.tenant_id, limit=query["limit"],
                                     cursor=query["cursor"], sequence_id=query["sequenceId"])
    return {"data": page.items, "nextCursor": page.next_cursor}

"""Contacts API (contract §4): create, upsert, list, get, update, delete.

Wherever a path takes a contact's id, its e-mail works too.
"""

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
from app.schemas.common import read_json_object
from app.schemas.contacts import ContactChangeSchema
from app.schemas.contacts import ContactCreateSchema
from app.schemas.contacts import ContactListQuery
from app.schemas.contacts import ContactPageSchema
from app.schemas.contacts import ContactPutSchema
from app.schemas.contacts import ContactSchema
from app.schemas.contacts import ContactUpsertSchema
from app.schemas.fields import normalise_email
from app.services import contacts

_create = ContactCreateSchema()
_change = ContactChangeSchema()
_put = ContactPutSchema()
_upsert = ContactUpsertSchema()
_list_query = ContactListQuery()


def _body() -> dict[str, Any]:
    return read_json_object(request, max_bytes=current_app.config["SETTINGS"].max_body_bytes)


def _upserted(data: dict[str, Any]) -> Any:
    contact, created = contacts.upsert_contact(
        db.session, tenant_id=g.tenant_id, email=data["email"], properties=data["properties"],
        subscribed=data.get("subscribed"))
    db.session.commit()
    return contacts.contact_view(contact), 201 if created else 200


document("/contacts", "post", "Create a contact", tag="contacts", status=201,
         body=ContactCreateSchema, response=ContactSchema)


@api.post("/contacts")
@require_api_key
def create_contact() -> Any:
    data = _create.load(_body())
    contact = contacts.create_contact(db.session, tenant_id=g.tenant_id, **data)
    db.session.commit()
    return contacts.contact_view(contact), 201


document("/contacts/upsert", "post", "Create a contact or merge into it (201 when created)",
         tag="contacts", body=ContactUpsertSchema, response=ContactSchema)


@api.post("/contacts/upsert")
@require_api_key
def upsert_contact() -> Any:
    return _upserted(_upsert.load(_body()))


# `{id}` like the other item paths (OpenAPI forbids two templates at one level); here it must be
# the contact's e-mail.
document("/contacts/{id}", "put", "Create or merge the contact with this e-mail (201 if new)",
         tag="contacts", body=ContactPutSchema, response=ContactSchema)


@api.put("/contacts/<email>")
@require_api_key
def put_contact(email: str) -> Any:
    data = _put.load(_body())
    try:
        email = normalise_email(email)
    except ValidationError as error:
        raise ValidationError({"email": error.messages}) from None
    if data.setdefault("email", email) != email:
        raise ValidationError({"email": ["Must match the e-mail in the path."]})
    return _upserted(data)


document("/contacts", "get", "List contacts, newest first", tag="contacts",
         query=ContactListQuery, response=ContactPageSchema)


@api.get("/contacts")
@require_api_key
def list_contacts() -> Any:
    query = _list_query.load(request.args)
    page = contacts.list_contacts(
        db.session, tenant_id=g.tenant_id, search=query.get("search"),
        suppressed=query.get("suppressed"), unsubscribed=query.get("unsubscribed"),
        limit=query["limit"], cursor=query["cursor"])
    return {"data": [contacts.contact_view(c) for c in page.items],
            "nextCursor": page.next_cursor}


document("/contacts/{id}", "get", "Get a contact by id or e-mail", tag="contacts",
         response=ContactSchema)


@api.get("/contacts/<ref>")
@require_api_key
def get_contact(ref: str) -> Any:
    return contacts.contact_view(contacts.find_contact(db.session, tenant_id=g.tenant_id,
                                                       ref=ref))


document("/contacts/{id}", "patch", "Update a contact (properties merged; null removes a key)",
         tag="contacts", body=ContactChangeSchema, response=ContactSchema)


@api.patch("/contacts/<ref>")
@require_api_key
def update_contact(ref: str) -> Any:
    data = _change.load(_body())
    contact = contacts.update_contact(db.session, tenant_id=g.tenant_id, ref=ref, **data)
    db.session.commit()
    return contacts.contact_view(contact)


document("/contacts/{id}", "delete", "Delete a contact and its events; its enrolments exit "
         "and its unsent e-mail is cancelled", tag="contacts", status=204)


@api.delete("/contacts/<ref>")
@require_api_key
def delete_contact(ref: str) -> Any:
    contacts.delete_contact(db.session, tenant_id=g.tenant_id, ref=ref)
    db.session.commit()
    return "", 204

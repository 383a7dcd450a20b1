"""Templates (contract §6): upsert, list, get, delete, preview."""

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
from app.schemas.templates import TEMPLATE_ID_RULE
from app.schemas.templates import PreviewResultSchema
from app.schemas.templates import PreviewSchema
from app.schemas.templates import TemplateListQuery
from app.schemas.templates import TemplatePageSchema
from app.schemas.templates import TemplatePutSchema
from app.schemas.templates import TemplateSchema
from app.schemas.templates import valid_template_id
from app.services import templates

_put = TemplatePutSchema()
_preview = PreviewSchema()
_list_query = TemplateListQuery()


def _body() -> dict[str, Any]:
    return read_json_object(request, max_bytes=current_app.config["SETTINGS"].max_body_bytes)


def _known_id(template_id: str) -> str:
    # An id that breaks the naming rule cannot have been stored: answer as for any unknown id.
    if not valid_template_id(template_id):
        raise NotFound(f"Template {template_id} not found.")
    return template_id


document("/templates/{id}", "put", "Create or replace a template (201 if new; version +1 on "
         "change)", tag="templates", body=TemplatePutSchema, response=TemplateSchema)


@api.put("/templates/<template_id>")
@require_api_key
def put_template(template_id: str) -> Any:
    if not valid_template_id(template_id):
        raise ValidationError({"id": [f"Template ids are {TEMPLATE_ID_RULE}"]})
    data = _put.load(_body())
    if data.pop("id", template_id) != template_id:
        raise ValidationError({"id": ["Must match the id in the path."]})
    template, created = templates.upsert_template(db.session, tenant_id=g.tenant_id,
                                                  template_id=template_id, **data)
    db.session.commit()
    return templates.template_view(template), 201 if created else 200


document("/templates", "get", "List templates in id order", tag="templates",
         query=TemplateListQuery, response=TemplatePageSchema)


@api.get("/templates")
@require_api_key
def list_templates() -> Any:
    query = _list_query.load(request.args)
    page = templates.list_templates(db.session, tenant_id=g.tenant_id, limit=query["limit"],
                                    cursor=query["cursor"])
    return {"data": [templates.template_view(t) for t in page.items],
            "nextCursor": page.next_cursor}


document("/templates/{id}", "get", "Get a template", tag="templates", response=TemplateSchema)


@api.get("/templates/<template_id>")
@require_api_key
def get_template(template_id: str) -> Any:
    template = templates.get_template(db.session, tenant_id=g.tenant_id,
                                      template_id=_known_id(template_id))
    return templates.template_view(template)


document("/templates/{id}", "delete", "Delete a template", tag="templates", status=204)


@api.delete("/templates/<template_id>")
@require_api_key
def delete_template(template_id: str) -> Any:
    templates.delete_template(db.session, tenant_id=g.tenant_id,
                              template_id=_known_id(template_id))
    db.session.commit()
    return "", 204


document("/templates/{id}/preview", "post", "Render a template without sending or storing "
         "anything", tag="templates", body=PreviewSchema, response=PreviewResultSchema)


@api.post("/templates/<template_id>/preview")
@require_api_key
def preview_template(template_id: str) -> Any:
    # Everything in the body is optional, so no body at all is a preview with empty context.
    data = _preview.load(_body() if request.get_data(cache=True).strip() else {})
    public_url = current_app.config["SETTINGS"].public_url
    rendered = templates.preview_template(
        db.session, tenant_id=g.tenant_id, template_id=_known_id(template_id),
        contact=data["contact"], variables=data["variables"], event=data["event"],
        unsubscribe_url=f"{public_url}/unsubscribe/preview")
    db.session.rollback()  # read-only: nothing of the preview may be stored
    return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}

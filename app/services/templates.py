"""Templates: a tenant's Liquid e-mails under client-chosen ids, versioned by change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import insert_if_absent
from app.errors import BadRequest
from app.errors import Conflict
from app.errors import NotFound
from app.models import Template
from app.services import contacts
from app.services import rendering
from app.services.pages import Page
from app.services.pages import page_by_id
from app.timeutil import isoformat
from app.timeutil import utcnow

_ONE_MS = timedelta(milliseconds=1)


def check_content(*, subject: str, html: str | None, mjml: str | None,
                  text: str | None) -> None:
    """BadRequest naming the field and line when a part is not valid Liquid (or MJML)."""
    try:
        rendering.check_template(subject=subject, html=html, mjml=mjml, text=text)
    except rendering.RenderError as error:
        field = error.part or ("mjml" if mjml is not None else "html")
        raise BadRequest(error.message, details={field: [error.message]}) from None


def get_template(db: Session, *, tenant_id: str, template_id: str,
                 lock: bool = False) -> Template:
    """The tenant's template with this id, or NotFound; `lock` holds its row."""
    query = select(Template).where(Template.tenant_id == tenant_id, Template.id == template_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    template = db.scalar(query)
    if template is None:
        raise NotFound(f"Template {template_id} not found.")
    return template


def upsert_template(db: Session, *, tenant_id: str, template_id: str, name: str, subject: str,
                    html: str | None, mjml: str | None,
                    text: str | None) -> tuple[Template, bool]:
    """Create or replace the template; return it and whether it is new.

    `version` starts at 1 and goes up only when something actually changed, so repeating a PUT
    is a no-op.
    """
    check_content(subject=subject, html=html, mjml=mjml, text=text)
    content = {"name": name, "subject": subject, "html": html, "mjml": mjml, "text": text}
    # Twice, because the row that made the insert skip may be deleted before we can lock it.
    for _attempt in range(2):
        now = utcnow()
        row = {"tenant_id": tenant_id, "id": template_id, "version": 1, "created_at": now,
               "updated_at": now, **content}
        # ON CONFLICT DO NOTHING: a concurrent creator makes this wait and skip, not fail.
        created = insert_if_absent(db, Template.__table__, row, ["tenant_id", "id"])
        try:
            template = get_template(db, tenant_id=tenant_id, template_id=template_id,
                                    lock=not created)
        except NotFound:
            continue
        if not created and any(getattr(template, key) != value for key, value in content.items()):
            for key, value in content.items():
                setattr(template, key, value)
            template.version += 1
            # Strictly later than before, so clients comparing timestamps see every change.
            template.updated_at = max(now, template.updated_at + _ONE_MS)
            db.flush()
        return template, created
    raise Conflict(f"The template {template_id} changed concurrently; retry the request.")


def list_templates(db: Session, *, tenant_id: str, limit: int,
                   cursor: str | None = None) -> Page[Template]:
    """A page of the tenant's templates in id order."""
    query = select(Template).where(Template.tenant_id == tenant_id)
    return page_by_id(db, query, Template.id, limit=limit, cursor=cursor, newest_first=False)


def delete_template(db: Session, *, tenant_id: str, template_id: str) -> None:
    """Delete the template (sends already made keep their rows)."""
    db.delete(get_template(db, tenant_id=tenant_id, template_id=template_id, lock=True))
    db.flush()


def preview_template(db: Session, *, tenant_id: str, template_id: str,
                     contact: str | dict[str, Any] | None, variables: dict[str, Any],
                     event: dict[str, Any] | None,
                     unsubscribe_url: str) -> rendering.RenderedEmail:
    """Render the template as the sender would, minus tracking; reads only, stores nothing.

    `contact` is a stored contact's id or e-mail (NotFound if unknown), or an inline
    `{email, properties}`; with none, contact fields are empty.
    """
    template = get_template(db, tenant_id=tenant_id, template_id=template_id)
    if isinstance(contact, str):
        stored = contacts.find_contact(db, tenant_id=tenant_id, ref=contact)
        person: dict[str, Any] = {"id": stored.id, "email": stored.email,
                                  "properties": stored.properties}
    else:
        person = {"id": None, **(contact or {"email": None, "properties": {}})}
    context = rendering.build_context(contact=person, variables=variables, event=event,
                                      unsubscribe_url=unsubscribe_url)
    try:
        return rendering.render_email(subject=template.subject, html=template.html,
                                      mjml=template.mjml, text=template.text, context=context)
    except rendering.RenderError as error:
        field = error.part or "template"
        raise BadRequest(error.message, details={field: [error.message]}) from None


def template_view(template: Template) -> dict[str, Any]:
    """The API's template object."""
    return {
        "id": template.id,
        "name": template.name,
        "subject": template.subject,
        "html": template.html,
        "mjml": template.mjml,
        "text": template.text,
        "variables": rendering.template_variables(subject=template.subject,
                                                  html=template.html, mjml=template.mjml,
                                                  text=template.text),
        "version": template.version,
        "createdAt": isoformat(template.created_at),
        "updatedAt": isoformat(template.updated_at),
    }

"""Helpers for the public tracking and unsubscribe tests: a sent e-mail without a sender."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask
from sqlalchemy import select

from app import db
from app.ids import new_id
from app.models import Contact
from app.models import Send
from app.services import tokens
from app.timeutil import utcnow
from tests.conftest import Tenant

LINKS = ["https://shop.example/offer?a=1&b=2", "http://blog.example/post#top"]


@dataclass(frozen=True)
class SentMail:
    """A `sent` send row and its contact, as the sender would leave them."""

    id: str
    email: str
    contact_id: str
    template_id: str


def insert_send(tenant: Tenant, *, email: str = "reader@example.com",
                links: list[str] | None = None, **columns: Any) -> SentMail:
    """Insert a contact (if new) and a sent send for it, committed."""
    now = utcnow()
    with db.transaction() as session:
        contact_id = session.scalar(select(Contact.id).where(
            Contact.tenant_id == tenant.id, Contact.email == email))
        if contact_id is None:
            contact_id = new_id("cnt")
            session.add(Contact(id=contact_id, tenant_id=tenant.id, email=email, properties={},
                                subscribed=True, suppressed=False, created_at=now,
                                updated_at=now))
            session.flush()
        send = Send(id=new_id("snd"), tenant_id=tenant.id, contact_id=contact_id, email=email,
                    template_id=columns.pop("template_id", "welcome"), status="sent",
                    links=list(LINKS if links is None else links), created_at=now,
                    updated_at=now, sent_at=now, **columns)
        session.add(send)
    return SentMail(send.id, email, contact_id, send.template_id)


def stored_send(send_id: str) -> Send:
    """The send row as committed."""
    with db.transaction() as session:
        send = session.get(Send, send_id)
        assert send is not None
        return send


def token(app: Flask, purpose: str, payload: list[Any],
          keys: tuple[str, ...] | None = None) -> str:
    """A token as the sender makes it (with the app's keys unless others are given)."""
    return tokens.make_token(keys or app.config["SETTINGS"].secret_keys, purpose, payload)


def system_events(tenant: Tenant, email: str, name: str) -> list[dict[str, Any]]:
    """The contact's `name` events, as the API lists them."""
    response = tenant.get("/api/events", query_string={"email": email, "event": name,
                                                        "limit": 100})
    assert response.status_code == 200, response.get_json()
    items: list[dict[str, Any]] = response.get_json()["data"]
    return items


def all_events(tenant: Tenant) -> list[dict[str, Any]]:
    """Every event of the tenant."""
    items: list[dict[str, Any]] = tenant.get("/api/events?limit=100").get_json()["data"]
    return items

"""The ingest service against the database, without HTTP or a worker."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from app import db
from app import postgres
from app.services import ingest
from tests.conftest import Tenant
from tests.support import backend


def test_upsert_contacts_maps_known_and_new_addresses_within_the_tenant(
        tenant: Tenant, other_tenant: Tenant) -> None:
    with db.transaction() as session:
        theirs = ingest.upsert_contacts(session, tenant_id=other_tenant.id, emails=["a@acme.test"])
        known = ingest.upsert_contacts(session, tenant_id=tenant.id, emails=["a@acme.test"])
    with db.transaction() as session:
        both = ingest.upsert_contacts(session, tenant_id=tenant.id,
                                      emails=["a@acme.test", "b@acme.test", "a@acme.test"])

    assert both["a@acme.test"] == known["a@acme.test"] != theirs["a@acme.test"]
    assert set(both) == {"a@acme.test", "b@acme.test"}
    assert both["b@acme.test"] not in (known["a@acme.test"], theirs["a@acme.test"])


@pytest.mark.skipif(backend() != "postgres", reason="PostgreSQL's planner")
def test_contact_lookup_probes_the_email_index_even_with_stale_statistics(tenant: Tenant
                                                                           ) -> None:
    # Statistics taken while the table was empty, as for a tenant whose contacts all arrived
    # since the last ANALYZE: a plan built from them must still not read every contact.
    with db.transaction() as session:
        session.execute(text("ANALYZE contacts"))
    emails = [f"user{i}@acme.test" for i in range(3000)]
    with db.transaction() as session:
        ingest.upsert_contacts(session, tenant_id=tenant.id, emails=emails)
        plan = "\n".join(row[0] for row in postgres.fetch_all(
            session, "EXPLAIN " + ingest._CONTACT_IDS_PG, (json.dumps(emails[:400]), tenant.id)))

    assert "uq_contacts_tenant_id_email" in plan
    assert "ix_contacts_tenant_id_id" not in plan

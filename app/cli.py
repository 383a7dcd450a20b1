"""The `kraiter` command: tenants, keys, migrations, archival, and the embedded dev stack."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from app import db
from app.config import Settings
from app.errors import APIError


def _wire() -> Settings:
    settings = Settings.from_env()
    if settings.embedded_database:
        from app.migrate import upgrade

        upgrade(settings.database_url)  # a fresh embedded database just works
    db.init_engine(settings.database_url)
    return settings


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else text)


def _run(work: Any) -> Any:
    """Run `work(session)` in a transaction; service errors become a clean CLI error."""
    try:
        with db.transaction() as session:
            return work(session)
    except APIError as error:
        raise click.ClickException(error.message) from None


@click.group()
def main() -> None:
    """Kraiter: e-mail automation for developers."""


@main.command()
def migrate() -> None:
    """Apply database migrations (idempotent; the Procfile's release step)."""
    from app.migrate import upgrade

    upgrade(Settings.from_env().database_url)
    click.echo("database is up to date")


@main.group()
def tenants() -> None:
    """Manage tenants."""


@tenants.command("create")
@click.argument("name")
@click.option("--retention-days", type=int, default=365, show_default=True)
@click.option("--from", "email_from", help="Default sender, e.g. 'Acme <hello@acme.test>'.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tenants_create(name: str, retention_days: int, email_from: str | None, as_json: bool) -> None:
    """Create a tenant and its first API key (the raw key is printed once)."""
    from app.services import tenants as service

    _wire()

    def work(session: Any) -> dict[str, Any]:
        tenant, issued = service.create_tenant(session, name=name, retention_days=retention_days,
                                               email_from=email_from)
        return {**service.tenant_view(tenant), "apiKey": issued.raw_key, "keyId": issued.key.id}

    data = _run(work)
    _emit(data, as_json, f"tenant {data['id']} created\nAPI key (shown once): {data['apiKey']}")


@tenants.command("update")
@click.argument("tenant_id")
@click.option("--retention-days", type=int)
@click.option("--from", "email_from")
@click.option("--name")
@click.option("--json", "as_json", is_flag=True)
def tenants_update(tenant_id: str, retention_days: int | None, email_from: str | None,
                   name: str | None, as_json: bool) -> None:
    """Change a tenant's settings."""
    from app.services import tenants as service

    _wire()
    data = _run(lambda session: service.tenant_view(service.update_tenant(
        session, tenant_id=tenant_id, retention_days=retention_days, email_from=email_from,
        name=name)))
    _emit(data, as_json, f"tenant {tenant_id} updated (retention {data['retentionDays']} days)")


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--name", required=True)
@click.option("--json", "as_json", is_flag=True)
def keys_create(tenant_id: str, name: str, as_json: bool) -> None:
    """Create an API key (the raw key is printed once)."""
    from app.services import tenants as service

    _wire()

    def work(session: Any) -> dict[str, Any]:
        issued = service.create_key(session, tenant_id=tenant_id, name=name)
        return {**service.key_view(issued.key), "apiKey": issued.raw_key}

    data = _run(work)
    _emit(data, as_json, f"key {data['id']} created\nAPI key (shown once): {data['apiKey']}")


@keys.command("list")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--json", "as_json", is_flag=True)
def keys_list(tenant_id: str, as_json: bool) -> None:
    """List a tenant's keys (never the raw keys)."""
    from app.services import tenants as service

    _wire()
    data = _run(lambda session: [service.key_view(k)
                                 for k in service.list_keys(session, tenant_id=tenant_id)])
    lines = [f"{k['id']}  {k['keyPrefix']}...  {k['name']}  "
             f"{'revoked ' + str(k['revokedAt']) if k['revokedAt'] else 'active'}" for k in data]
    _emit(data, as_json, "\n".join(lines) or "no keys")


@keys.command("revoke")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True)
def keys_revoke(key_id: str, as_json: bool) -> None:
    """Revoke a key; it is refused from the next request on."""
    from app.services import tenants as service

    _wire()
    data = _run(lambda session: service.key_view(service.revoke_key(session, key_id=key_id)))
    _emit(data, as_json, f"key {key_id} revoked")


@main.group()
def events() -> None:
    """Event maintenance."""


@events.command("archive")
@click.option("--json", "as_json", is_flag=True)
def events_archive(as_json: bool) -> None:
    """Run one archival pass now and print how many events moved."""
    from tasks.retention import run_archive_pass

    settings = _wire()
    moved = run_archive_pass(batch_size=settings.archive_batch_size)
    _emit({"moved": moved}, as_json, f"archived {moved} events")


@main.command()
@click.option("--port", type=int, default=None, help="Default: $PORT or 8000.")
def dev(port: int | None) -> None:
    """Run the whole system (API, worker, beat) on the embedded defaults."""
    from app.dev import run_dev

    sys.exit(run_dev(port=port))


if __name__ == "__main__":
    main()

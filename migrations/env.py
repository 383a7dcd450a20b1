"""Alembic environment: the URL comes from the settings, the target from the models."""

from __future__ import annotations

import os

from alembic import context

import app.models  # noqa: F401  (registers the tables on the metadata)
from app.config import database_url_from_env
from app.db import Base
from app.db import make_engine

config = context.config
url = config.attributes.get("database_url") or database_url_from_env(dict(os.environ))


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Short locks: a migration waiting behind live traffic should fail, not stall the app.
            connection.exec_driver_sql("SET lock_timeout = '10s'")
            connection.commit()  # else Alembic joins this open transaction and never commits
        context.configure(connection=connection, target_metadata=Base.metadata,
                          render_as_batch=connection.dialect.name == "sqlite",
                          transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

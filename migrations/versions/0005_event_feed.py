"""live feed positions: events.feed_seq, events_archive.feed_seq, event_feeds

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

Additive only (nullable columns, a new table), so the previous release keeps running while this
applies. On PostgreSQL the index is built CONCURRENTLY: the events table is the big, hot one and
a plain CREATE INDEX would hold off ingestion for as long as the build takes.
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("feed_seq", sa.BigInteger(), nullable=True))
    op.add_column("events_archive", sa.Column("feed_seq", sa.BigInteger(), nullable=True))
    op.create_table(
        "event_feeds",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_event_feeds_tenant_id_tenants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_event_feeds")),
    )
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index("ix_events_tenant_feed_seq", "events", ["tenant_id", "feed_seq"],
                            postgresql_concurrently=True, if_not_exists=True)
    else:
        op.create_index("ix_events_tenant_feed_seq", "events", ["tenant_id", "feed_seq"])


def downgrade() -> None:
    op.drop_index("ix_events_tenant_feed_seq", table_name="events")
    op.drop_table("event_feeds")
    op.drop_column("events_archive", "feed_seq")
    op.drop_column("events", "feed_seq")

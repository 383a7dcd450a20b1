"""sequences, sequence versions, enrolments

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

New tables only, so the previous release keeps running while this applies. The partial indexes
(PostgreSQL and SQLite both have them) keep the sweeper's scan to active enrolments and allow one
active enrolment per contact and sequence (except `reenrol: always` ones, `exclusive` false).
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    op.create_table(
        "sequences",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_sequences_tenant_id_tenants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_sequences")),
    )
    op.create_index("ix_sequences_tenant_status", "sequences", ["tenant_id", "status", "id"])
    op.create_table(
        "sequence_versions",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("sequence_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("triggers", _JSON, nullable=True),
        sa.Column("canonical", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "sequence_id"],
                                ["sequences.tenant_id", "sequences.id"],
                                name=op.f("fk_sequence_versions_tenant_id_sequences"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "sequence_id", "version",
                                name=op.f("pk_sequence_versions")),
    )
    op.create_table(
        "enrolments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("sequence_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("exclusive", sa.Boolean(), nullable=False),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column("next_step_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_reason", sa.String(length=40), nullable=True),
        sa.Column("event", _JSON, nullable=True),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_enrolments_tenant_id_tenants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolments")),
    )
    one_active = sa.text("status = 'active' AND exclusive")
    op.create_index("uq_enrolments_one_active", "enrolments",
                    ["tenant_id", "sequence_id", "contact_id"], unique=True,
                    postgresql_where=one_active, sqlite_where=one_active)
    op.create_index("ix_enrolments_due", "enrolments", ["next_step_at"],
                    postgresql_where=_ACTIVE, sqlite_where=_ACTIVE)
    op.create_index("ix_enrolments_scheduled", "enrolments", ["tenant_id", "next_step_at", "id"],
                    postgresql_where=_ACTIVE, sqlite_where=_ACTIVE)
    op.create_index("ix_enrolments_sequence", "enrolments", ["tenant_id", "sequence_id", "id"])
    op.create_index("ix_enrolments_contact", "enrolments",
                    ["tenant_id", "contact_id", "sequence_id"])


def downgrade() -> None:
    op.drop_table("enrolments")
    op.drop_table("sequence_versions")
    op.drop_index("ix_sequences_tenant_status", table_name="sequences")
    op.drop_table("sequences")

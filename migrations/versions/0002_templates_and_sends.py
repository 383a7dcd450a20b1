"""templates, sends, webhook deliveries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 21:41:21.829628

Migrations must work with the previous release's code still running (expand, then contract) and
keep locks short.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_deliveries',
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('message_id', sa.String(length=255), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('provider', 'message_id', name=op.f('pk_webhook_deliveries'))
    )
    op.create_index(op.f('ix_webhook_deliveries_received_at'), 'webhook_deliveries', ['received_at'], unique=False)
    op.create_table('sends',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('contact_id', sa.String(length=40), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('template_id', sa.String(length=200), nullable=False),
    sa.Column('template_version', sa.Integer(), nullable=True),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('source_id', sa.String(length=200), nullable=True),
    sa.Column('enrolment_id', sa.String(length=40), nullable=True),
    sa.Column('step_index', sa.Integer(), nullable=True),
    sa.Column('variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('context', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('links', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('message_id', sa.String(length=255), nullable=True),
    sa.Column('provider_message_id', sa.String(length=255), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('clicked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('bounced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('complained_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('unsubscribed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('bounce_type', sa.String(length=8), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_sends_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sends')),
    sa.UniqueConstraint('enrolment_id', 'step_index', name=op.f('uq_sends_enrolment_id_step_index')),
    sa.UniqueConstraint('provider_message_id', name=op.f('uq_sends_provider_message_id'))
    )
    op.create_index('ix_sends_status_claimed', 'sends', ['status', 'claimed_at'], unique=False)
    op.create_index('ix_sends_tenant_contact', 'sends', ['tenant_id', 'contact_id', 'id'], unique=False)
    op.create_index('ix_sends_tenant_id', 'sends', ['tenant_id', 'id'], unique=False)
    op.create_index('ix_sends_tenant_status', 'sends', ['tenant_id', 'status', 'id'], unique=False)
    op.create_index('ix_sends_tenant_template', 'sends', ['tenant_id', 'template_id', 'id'], unique=False)
    op.create_table('templates',
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('html', sa.Text(), nullable=True),
    sa.Column('mjml', sa.Text(), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_templates_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'id', name=op.f('pk_templates'))
    )


def downgrade() -> None:
    op.drop_table('templates')
    op.drop_index('ix_sends_tenant_template', table_name='sends')
    op.drop_index('ix_sends_tenant_status', table_name='sends')
    op.drop_index('ix_sends_tenant_id', table_name='sends')
    op.drop_index('ix_sends_tenant_contact', table_name='sends')
    op.drop_index('ix_sends_status_claimed', table_name='sends')
    op.drop_table('sends')
    op.drop_index(op.f('ix_webhook_deliveries_received_at'), table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')

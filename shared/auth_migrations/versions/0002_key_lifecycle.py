"""Key lifecycle: expiry, revocation time, who made a key and which it replaced; the audit trail;
organization names as slugs for new keys; the accounts service's outbox and processed events.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.migrations import create_backbone_tables

revision = "0002"
down_revision = "0001"

SCHEMA = "rlhf_auth"


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA)
    op.add_column("api_keys", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA)
    op.add_column("api_keys", sa.Column("created_by", sa.Text, nullable=True), schema=SCHEMA)
    op.add_column("api_keys", sa.Column("rotated_from", sa.Text, nullable=True), schema=SCHEMA)
    op.create_index("ix_api_keys_organization_created_at", "api_keys", ["organization", "created_at"], schema=SCHEMA)
    # NOT VALID: checked for every new or changed key; keys made before the rule keep working.
    op.execute(
        f"ALTER TABLE {SCHEMA}.api_keys ADD CONSTRAINT ck_api_keys_organization_slug "
        "CHECK (organization ~ '^[a-z0-9][a-z0-9-]{0,62}$') NOT VALID"
    )
    op.create_table(
        "key_audit",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("details", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("action IN ('created', 'rotated', 'revoked')", name="ck_key_audit_action"),
        schema=SCHEMA,
    )
    op.create_index("ix_key_audit_organization_id", "key_audit", ["organization", "id"], schema=SCHEMA)
    create_backbone_tables(op, SCHEMA)


def downgrade() -> None:
    op.drop_table("processed_events", schema=SCHEMA)
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("key_audit", schema=SCHEMA)
    op.execute(f"ALTER TABLE {SCHEMA}.api_keys DROP CONSTRAINT ck_api_keys_organization_slug")
    op.drop_index("ix_api_keys_organization_created_at", "api_keys", schema=SCHEMA)
    for column in ("rotated_from", "created_by", "revoked_at", "expires_at"):
        op.drop_column("api_keys", column, schema=SCHEMA)

"""Feedback with review state and attribution; the outbox and processed-events tables.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.migrations import create_backbone_tables

revision = "0001"
down_revision = None

SCHEMA = "feedback"


def upgrade() -> None:
    op.create_table(
        "rlhf_feedback",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("session_id", sa.Text),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("feedback_type", sa.Text, nullable=False),
        sa.Column("feedback_value", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("curator_email", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("correction", sa.Text),
        sa.Column("tags", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("notes", sa.Text),
        sa.Column("reviewed_by", sa.Text),
        sa.Column("reviewed_at", sa.DateTime(timezone=True)),
        sa.Column("response_id", sa.Text),
        sa.Column("model_id", sa.Text),
        sa.Column("experiment_id", sa.Text),
        sa.Column("variant", sa.Text),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("source", sa.Text, nullable=False, server_default="http"),
        sa.CheckConstraint(
            "feedback_type IN ('thumbs_up', 'thumbs_down', 'rating', 'correction', 'detailed')",
            name="ck_rlhf_feedback_type",
        ),
        sa.CheckConstraint("status IN ('pending', 'approved', 'rejected')", name="ck_rlhf_feedback_status"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_rlhf_feedback_org_created", "rlhf_feedback",
        ["organization", sa.text("created_at DESC"), sa.text("id DESC")], schema=SCHEMA,
    )
    op.create_index(
        "ix_rlhf_feedback_org_status_created", "rlhf_feedback",
        ["organization", "status", sa.text("created_at DESC")], schema=SCHEMA,
    )
    op.create_index("ix_rlhf_feedback_tags", "rlhf_feedback", ["tags"], schema=SCHEMA, postgresql_using="gin")
    create_backbone_tables(op, SCHEMA)


def downgrade() -> None:
    op.drop_table("processed_events", schema=SCHEMA)
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("rlhf_feedback", schema=SCHEMA)

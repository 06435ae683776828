"""Served responses (from ResponseServed), so that feedback may name only a response id.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

SCHEMA = "feedback"


def upgrade() -> None:
    op.create_table(
        "served_responses",
        sa.Column("organization", sa.Text, primary_key=True),
        sa.Column("response_id", sa.Text, primary_key=True),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("model_id", sa.Text, nullable=False),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("experiment_id", sa.Text),
        sa.Column("variant", sa.Text),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_served_responses_served_at", "served_responses", ["served_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("served_responses", schema=SCHEMA)

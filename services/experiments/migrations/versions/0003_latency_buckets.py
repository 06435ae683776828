"""Latency sketches: counts per logarithmic bucket, per experiment and variant (percentiles within 1%).

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"

SCHEMA = "experiments"


def upgrade() -> None:
    op.create_table(
        "latency_buckets",
        sa.Column("experiment_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("variant", sa.Text, primary_key=True),
        sa.Column("bucket", sa.Integer, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False, server_default="0"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("latency_buckets", schema=SCHEMA)

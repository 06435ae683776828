"""Experiments (the spec's ab_test_experiments), the service's view of registered versions,
exposures, units per variant, outcome statistics, served responses; outbox and processed events.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.migrations import create_backbone_tables

revision = "0001"
down_revision = None

SCHEMA = "experiments"
JSONB = postgresql.JSONB
UUID = postgresql.UUID(as_uuid=True)
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ab_test_experiments",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("control_model_id", UUID, nullable=False),
        sa.Column("treatment_model_id", UUID, nullable=False),
        sa.Column("traffic_split", sa.Float, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("seed", sa.Text, nullable=False),
        sa.Column("start_date", TZ),
        sa.Column("end_date", TZ),
        sa.Column("success_metrics", JSONB, nullable=False),
        sa.Column("guardrails", JSONB, nullable=False, server_default="[]"),
        sa.Column("min_sample_size", sa.Integer, nullable=False, server_default="0"),
        sa.Column("sequential", sa.Boolean, nullable=False, server_default="true"),
        sa.Column("results", JSONB),
        sa.Column("winner", sa.Text),
        sa.Column("status_reason", sa.Text),
        sa.Column("deploy_requested_at", TZ),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('draft', 'running', 'paused', 'completed', 'cancelled')",
                           name="ck_ab_test_experiments_status"),
        sa.CheckConstraint("winner IS NULL OR winner IN ('control', 'treatment', 'inconclusive')",
                           name="ck_ab_test_experiments_winner"),
        sa.CheckConstraint("traffic_split >= 0 AND traffic_split <= 1", name="ck_ab_test_experiments_split"),
        schema=SCHEMA,
    )
    op.create_index("ix_ab_test_experiments_org_created", "ab_test_experiments", ["organization", "created_at", "id"],
                    schema=SCHEMA)
    op.create_index("uq_ab_test_experiments_one_live", "ab_test_experiments", ["organization", "model_name"],
                    unique=True, schema=SCHEMA, postgresql_where=sa.text("status IN ('running', 'paused')"))
    op.create_table(
        "model_versions",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("model_id", sa.Text, nullable=False),
        sa.Column("serving", JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("status_at", TZ),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("ix_model_versions_org_name", "model_versions", ["organization", "name"], schema=SCHEMA)
    op.create_table(
        "exposures",
        sa.Column("experiment_id", UUID, primary_key=True),
        sa.Column("unit", sa.Text, primary_key=True),
        sa.Column("variant", sa.Text, nullable=False),
        sa.Column("first_at", TZ, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "variant_units",
        sa.Column("experiment_id", UUID, primary_key=True),
        sa.Column("variant", sa.Text, primary_key=True),
        sa.Column("units", sa.BigInteger, nullable=False, server_default="0"),
        schema=SCHEMA,
    )
    op.create_table(
        "outcome_stats",
        sa.Column("experiment_id", UUID, primary_key=True),
        sa.Column("variant", sa.Text, primary_key=True),
        sa.Column("metric", sa.Text, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("total", sa.Float, nullable=False, server_default="0"),
        sa.Column("total_sq", sa.Float, nullable=False, server_default="0"),
        sa.Column("levels", postgresql.ARRAY(sa.BigInteger), nullable=False, server_default="{0,0,0,0,0}"),
        schema=SCHEMA,
    )
    op.create_table(
        "served_responses",
        sa.Column("response_id", sa.Text, primary_key=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("experiment_id", UUID, nullable=False),
        sa.Column("variant", sa.Text, nullable=False),
        sa.Column("served_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("feedback_count", sa.Integer, nullable=False, server_default="0"),
        schema=SCHEMA,
    )
    create_backbone_tables(op, SCHEMA)


def downgrade() -> None:
    for table in ("processed_events", "outbox", "served_responses", "outcome_stats", "variant_units", "exposures",
                  "model_versions", "ab_test_experiments"):
        op.drop_table(table, schema=SCHEMA)

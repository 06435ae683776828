"""Known dataset versions, fine-tuning jobs with their metrics and events, budgets, the audit log;
the outbox and processed-events tables.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.migrations import create_backbone_tables

revision = "0001"
down_revision = None

SCHEMA = "training"
JSONB = postgresql.JSONB
UUID = postgresql.UUID(as_uuid=True)
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("organization", sa.Text, primary_key=True),
        sa.Column("dataset_id", UUID, primary_key=True),
        sa.Column("export_version", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("dataset_type", sa.Text, nullable=False),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("validation_url", sa.Text),
        sa.Column("counts", JSONB, nullable=False, server_default="{}"),
        sa.Column("auto_train", JSONB),
        sa.Column("received_at", TZ, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "fine_tuning_jobs",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("dataset_id", UUID, nullable=False),
        sa.Column("export_version", sa.Integer, nullable=False),
        sa.Column("dataset_format", sa.Text, nullable=False),
        sa.Column("training_url", sa.Text, nullable=False),
        sa.Column("validation_url", sa.Text),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("base_model", sa.Text, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("hyperparameters", JSONB, nullable=False, server_default="{}"),
        sa.Column("suffix", sa.Text),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("job_id", sa.Text),
        sa.Column("provider_status", sa.Text),
        sa.Column("provider_cursor", JSONB, nullable=False, server_default="{}"),
        sa.Column("training_metrics", JSONB, nullable=False, server_default="{}"),
        sa.Column("resulting_model_id", sa.Text),
        sa.Column("estimated_tokens", sa.BigInteger, nullable=False),
        sa.Column("epochs", sa.Integer, nullable=False),
        sa.Column("trained_tokens", sa.BigInteger),
        sa.Column("cost_estimate", sa.Numeric(12, 4), nullable=False),
        sa.Column("actual_cost", sa.Numeric(12, 4)),
        sa.Column("error_message", sa.Text),
        sa.Column("submit_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TZ),
        sa.Column("last_progress_at", TZ),
        sa.Column("auto_launched", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", TZ),
        sa.Column("completed_at", TZ),
        sa.CheckConstraint(
            "status IN ('pending', 'validating', 'queued', 'training', 'completed', 'failed', 'cancelled')",
            name="ck_fine_tuning_jobs_status",
        ),
        sa.CheckConstraint("method IN ('sft', 'dpo')", name="ck_fine_tuning_jobs_method"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_fine_tuning_jobs_org_created", "fine_tuning_jobs", ["organization", "created_at"], schema=SCHEMA
    )
    op.create_index("ix_fine_tuning_jobs_status", "fine_tuning_jobs", ["status"], schema=SCHEMA)
    op.create_table(
        "job_metrics",
        sa.Column("job_id", UUID, primary_key=True),
        sa.Column("step", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.Float),
        sa.Column("metrics", JSONB, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "job_events",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("job_id", UUID, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", JSONB, nullable=False, server_default="{}"),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"], schema=SCHEMA)
    op.create_table(
        "budgets",
        sa.Column("organization", sa.Text, primary_key=True),
        sa.Column("monthly_limit", sa.Numeric(12, 2), nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("job_id", UUID),
        sa.Column("details", JSONB, nullable=False, server_default="{}"),
        sa.Column("at", TZ, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("ix_audit_log_org_at", "audit_log", ["organization", "at"], schema=SCHEMA)
    create_backbone_tables(op, SCHEMA)


def downgrade() -> None:
    for table in ("processed_events", "outbox", "audit_log", "budgets", "job_events", "job_metrics",
                  "fine_tuning_jobs", "dataset_versions"):
        op.drop_table(table, schema=SCHEMA)

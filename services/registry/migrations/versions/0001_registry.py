"""Model versions (the spec's model_registry, with how to call each: serving), the deployment
history, deploy policies; the outbox and processed-events tables.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.migrations import create_backbone_tables

revision = "0001"
down_revision = None

SCHEMA = "registry"
JSONB = postgresql.JSONB
UUID = postgresql.UUID(as_uuid=True)
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_registry",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("major", sa.Integer, nullable=False),
        sa.Column("minor", sa.Integer, nullable=False),
        sa.Column("patch", sa.Integer, nullable=False),
        sa.Column("model_id", sa.Text, nullable=False),
        sa.Column("base_model", sa.Text, nullable=False),
        sa.Column("fine_tuning_job_id", UUID),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("performance_metrics", JSONB, nullable=False, server_default="{}"),
        sa.Column("deployment_config", JSONB, nullable=False, server_default="{}"),
        sa.Column("serving", JSONB, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("lineage", JSONB, nullable=False, server_default="{}"),
        sa.Column("registered_by", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("deployed_at", TZ),
        sa.CheckConstraint("status IN ('testing', 'deployed', 'deprecated', 'archived')",
                           name="ck_model_registry_status"),
        schema=SCHEMA,
    )
    op.create_index("uq_model_registry_org_name_version", "model_registry", ["organization", "name", "version"],
                    unique=True, schema=SCHEMA)
    op.create_index("uq_model_registry_org_job", "model_registry", ["organization", "fine_tuning_job_id"],
                    unique=True, schema=SCHEMA, postgresql_where=sa.text("fine_tuning_job_id IS NOT NULL"))
    # The rule "one deployed version per name per organization", kept by the database itself.
    op.create_index("uq_model_registry_one_deployed", "model_registry", ["organization", "name"],
                    unique=True, schema=SCHEMA, postgresql_where=sa.text("status = 'deployed'"))
    op.create_index("ix_model_registry_org_created", "model_registry", ["organization", "created_at", "id"],
                    schema=SCHEMA)
    op.create_table(
        "deployment_history",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("model_version_id", UUID, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("from_status", sa.Text),
        sa.Column("to_status", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("experiment_id", sa.Text),
        sa.Column("forced", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("previous_version_id", UUID),
        sa.Column("details", JSONB, nullable=False, server_default="{}"),
        sa.Column("at", TZ, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("ix_deployment_history_version", "deployment_history", ["model_version_id", "id"], schema=SCHEMA)
    op.create_index("ix_deployment_history_org_name", "deployment_history", ["organization", "name", "id"],
                    schema=SCHEMA)
    op.create_table(
        "deploy_policies",
        sa.Column("organization", sa.Text, primary_key=True),
        sa.Column("require_evaluation", sa.Boolean, nullable=False, server_default="true"),
        sa.Column("min_preference_accuracy", sa.Float),
        sa.Column("min_reward_margin", sa.Float),
        sa.Column("max_eval_loss", sa.Float),
        sa.Column("min_token_accuracy", sa.Float),
        sa.Column("max_leak_findings", sa.Integer),
        sa.Column("updated_by", sa.Text, nullable=False),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    create_backbone_tables(op, SCHEMA)


def downgrade() -> None:
    for table in ("processed_events", "outbox", "deploy_policies", "deployment_history", "model_registry"):
        op.drop_table(table, schema=SCHEMA)

"""Training datasets, preference pairs, export versions, the feedback projection; the outbox and
processed-events tables.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.migrations import create_backbone_tables

revision = "0001"
down_revision = None

SCHEMA = "curation"
UUIDS = postgresql.ARRAY(postgresql.UUID(as_uuid=True))


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    ]


def upgrade() -> None:
    op.create_table(
        "training_datasets",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("dataset_type", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="draft"),
        sa.Column("feedback_ids", UUIDS, nullable=False, server_default="{}"),
        sa.Column("sample_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("quality_score", sa.Float),
        sa.Column("validation_report", postgresql.JSONB),
        sa.Column("export_format", sa.Text),
        sa.Column("export_url", sa.Text),
        sa.Column("export_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("system_prompt", sa.Text),
        sa.Column("validation_ratio", sa.Float, nullable=False, server_default="0.1"),
        sa.Column("split_seed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("auto_train", postgresql.JSONB),
        sa.Column("content_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("curator_email", sa.Text),
        *_timestamps(),
        sa.CheckConstraint(
            "dataset_type IN ('preference_pairs', 'instruction_tuning', 'dpo')", name="ck_training_datasets_type"
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'curating', 'ready', 'exported', 'archived')", name="ck_training_datasets_status"
        ),
        sa.CheckConstraint("quality_score BETWEEN 0 AND 1", name="ck_training_datasets_quality"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_training_datasets_org_created", "training_datasets",
        ["organization", sa.text("created_at DESC"), sa.text("id DESC")], schema=SCHEMA,
    )
    op.create_index(
        "ix_training_datasets_feedback_ids", "training_datasets", ["feedback_ids"], schema=SCHEMA,
        postgresql_using="gin",
    )
    op.create_table(
        "preference_pairs",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column(
            "dataset_id", postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{SCHEMA}.training_datasets.id", ondelete="CASCADE"), nullable=False,
        ),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("chosen_response", sa.Text, nullable=False),
        sa.Column("rejected_response", sa.Text, nullable=False),
        sa.Column("preference_strength", sa.Float, nullable=False),
        sa.Column("context_documents", postgresql.JSONB, nullable=False, server_default="[]"),
        sa.Column("annotator_email", sa.Text),
        sa.Column("annotation_notes", sa.Text),
        sa.Column("source_feedback_ids", UUIDS, nullable=False, server_default="{}"),
        sa.Column("strategy", sa.Text, nullable=False, server_default="manual"),
        sa.Column("source_key", sa.Text),
        *_timestamps(),
        sa.CheckConstraint("preference_strength BETWEEN 0 AND 1", name="ck_preference_pairs_strength"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_preference_pairs_org_created", "preference_pairs",
        ["organization", sa.text("created_at DESC"), sa.text("id DESC")], schema=SCHEMA,
    )
    op.create_index("ix_preference_pairs_dataset", "preference_pairs", ["dataset_id"], schema=SCHEMA)
    op.create_index(
        "uq_preference_pairs_dataset_source", "preference_pairs", ["dataset_id", "source_key"],
        unique=True, schema=SCHEMA,
    )
    op.create_table(
        "dataset_exports",
        sa.Column(
            "dataset_id", postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{SCHEMA}.training_datasets.id", ondelete="CASCADE"), primary_key=True,
        ),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("validation_url", sa.Text),
        sa.Column("validation_sha256", sa.Text),
        sa.Column("manifest_url", sa.Text, nullable=False),
        sa.Column("counts", postgresql.JSONB, nullable=False),
        sa.Column("masked", postgresql.JSONB, nullable=False),
        sa.Column("content_version", sa.Integer, nullable=False),
        sa.Column("created_by", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "feedback_projection",
        sa.Column("feedback_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("query", sa.Text),
        sa.Column("response", sa.Text),
        sa.Column("feedback_type", sa.Text),
        sa.Column("rating", sa.Float),
        sa.Column("value_correction", sa.Text),
        sa.Column("review_correction", sa.Text),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("tags", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("session_id", sa.Text),
        sa.Column("model_id", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("reviewed_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_feedback_projection_org_created", "feedback_projection", ["organization", "created_at"], schema=SCHEMA
    )
    create_backbone_tables(op, SCHEMA)


def downgrade() -> None:
    for table in ("processed_events", "outbox", "feedback_projection", "dataset_exports", "preference_pairs",
                  "training_datasets"):
        op.drop_table(table, schema=SCHEMA)

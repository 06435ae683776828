"""What the model registry needs from a job: the name its model is registered under, the export it
trained on (as DatasetExported described it, with the manifest beside `sources.jsonl`), and its
evaluation.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"

SCHEMA = "training"


def upgrade() -> None:
    op.add_column("dataset_versions", sa.Column("manifest_url", sa.Text), schema=SCHEMA)
    op.add_column("dataset_versions", sa.Column("validation_sha256", sa.Text), schema=SCHEMA)
    op.add_column("fine_tuning_jobs", sa.Column("model_name", sa.Text), schema=SCHEMA)
    op.add_column("fine_tuning_jobs", sa.Column("export_ref", postgresql.JSONB, nullable=False,
                                                server_default="{}"), schema=SCHEMA)
    op.add_column("fine_tuning_jobs", sa.Column("evaluation", postgresql.JSONB), schema=SCHEMA)


def downgrade() -> None:
    for column in ("evaluation", "export_ref", "model_name"):
        op.drop_column("fine_tuning_jobs", column, schema=SCHEMA)
    for column in ("validation_sha256", "manifest_url"):
        op.drop_column("dataset_versions", column, schema=SCHEMA)

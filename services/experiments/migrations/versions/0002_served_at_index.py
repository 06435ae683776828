"""An index on served_responses.served_at, for the retention sweep.

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"

SCHEMA = "experiments"


def upgrade() -> None:
    op.create_index("ix_served_responses_served_at", "served_responses", ["served_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_served_responses_served_at", "served_responses", schema=SCHEMA)

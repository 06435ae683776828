"""The tally table and the backbone tables.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

from shared.migrations import create_backbone_tables

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "tallies", sa.Column("organization", sa.Text, primary_key=True), sa.Column("count", sa.Integer),
        schema="tally",
    )
    create_backbone_tables(op, "tally")

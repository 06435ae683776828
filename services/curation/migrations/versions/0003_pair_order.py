"""Each preference pair's place in its dataset: `seq`, the order pairs were written in.

An export streams a dataset's pairs in `seq` order, through an index on (dataset_id, seq): that order
follows the table's physical order, so a million-pair export reads the heap sequentially instead of
jumping to a random page per row (which the previous order, by duplicate key, did). Of identical
pairs the first written is kept; the (dataset_id, exact_key, seq) index, with the id and organization
included, finds the duplicate groups without touching the table.

Adding an identity column numbers the existing rows in their physical order (the table is rewritten).

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"

SCHEMA = "curation"


def upgrade() -> None:
    op.execute(f'ALTER TABLE "{SCHEMA}".preference_pairs ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY')
    op.drop_index("ix_preference_pairs_dataset", "preference_pairs", schema=SCHEMA)
    op.drop_index("ix_preference_pairs_dataset_exact", "preference_pairs", schema=SCHEMA)
    op.create_index("ix_preference_pairs_dataset_seq", "preference_pairs", ["dataset_id", "seq"], schema=SCHEMA)
    op.create_index(
        "ix_preference_pairs_dataset_exact", "preference_pairs", ["dataset_id", "exact_key", "seq"], schema=SCHEMA,
        postgresql_include=["id", "organization"],
    )


def downgrade() -> None:
    op.drop_index("ix_preference_pairs_dataset_exact", "preference_pairs", schema=SCHEMA)
    op.drop_index("ix_preference_pairs_dataset_seq", "preference_pairs", schema=SCHEMA)
    op.create_index(
        "ix_preference_pairs_dataset_exact", "preference_pairs", ["dataset_id", "exact_key", "id"], schema=SCHEMA
    )
    op.create_index("ix_preference_pairs_dataset", "preference_pairs", ["dataset_id"], schema=SCHEMA)
    op.execute(f'ALTER TABLE "{SCHEMA}".preference_pairs DROP COLUMN seq')

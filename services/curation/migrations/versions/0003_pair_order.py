"""Each preference pair's place in its dataset: `seq`, the order pairs were written in.

An export streams a dataset's pairs in `seq` order, through an index on (dataset_id, seq): that order
follows the table's physical order, so a million-pair export reads the heap sequentially instead of
jumping to a random page per row (which the previous order, by duplicate key, did). Of identical
pairs the first written is kept; the (dataset_id, exact_key, seq) index, with the id and organization
included, finds the duplicate groups without touching the table.

Each pair also stores a 64-bit hash of its prompt key, `prompt_hash`, indexed with its dataset: the
near-duplicate search counts which prompt keys are shared by an index-only scan of it instead of
reading and hashing every prompt key in the table.

Adding an identity column numbers the existing rows in their physical order (the table is rewritten).

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"

SCHEMA = "curation"
# The hash of migration 0002's prompt key (a generated column cannot read another: the expression again).
PROMPT_HASH = "hashtextextended(regexp_replace(lower(query), '[^[:alnum:]]+', '', 'g'), 0)"


def upgrade() -> None:
    op.execute(
        f"""ALTER TABLE "{SCHEMA}".preference_pairs
              ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY,
              ADD COLUMN prompt_hash bigint GENERATED ALWAYS AS ({PROMPT_HASH}) STORED"""
    )
    op.create_index(
        "ix_preference_pairs_dataset_prompt_hash", "preference_pairs", ["dataset_id", "prompt_hash"], schema=SCHEMA,
        postgresql_include=["organization"],
    )
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
    op.drop_index("ix_preference_pairs_dataset_prompt_hash", "preference_pairs", schema=SCHEMA)
    op.execute(f'ALTER TABLE "{SCHEMA}".preference_pairs DROP COLUMN prompt_hash, DROP COLUMN seq')

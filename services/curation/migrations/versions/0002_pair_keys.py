"""Each preference pair's split/near-duplicate prompt key and exact-duplicate key, stored.

Both are generated columns: PostgreSQL computes them on every insert and update, whichever path
writes the pair (the API, bulk strategies, COPY), and adding them backfills existing rows. The
export and the validation read them instead of normalising a million prompts per run, and the index
gives the export its de-duplication order without sorting full rows.

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"

SCHEMA = "curation"

# Must stay the expressions services/curation/repository.py uses for instruction datasets.
PROMPT_KEY = "regexp_replace(lower(query), '[^[:alnum:]]+', '', 'g')"
EXACT_KEY = "md5(query || chr(1) || chosen_response || chr(1) || rejected_response)::uuid"


def upgrade() -> None:
    op.execute(
        f"""ALTER TABLE "{SCHEMA}".preference_pairs
              ADD COLUMN prompt_key text GENERATED ALWAYS AS ({PROMPT_KEY}) STORED,
              ADD COLUMN exact_key uuid GENERATED ALWAYS AS ({EXACT_KEY}) STORED"""
    )
    op.create_index(
        "ix_preference_pairs_dataset_exact", "preference_pairs", ["dataset_id", "exact_key", "id"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("ix_preference_pairs_dataset_exact", "preference_pairs", schema=SCHEMA)
    op.execute(f'ALTER TABLE "{SCHEMA}".preference_pairs DROP COLUMN exact_key, DROP COLUMN prompt_key')

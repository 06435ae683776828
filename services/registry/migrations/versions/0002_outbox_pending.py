"""The outbox's unsent rows are the ids in `outbox_pending` (a trigger adds them; the relay deletes
them as it publishes), no longer a null `published_at` the relay updated; and no unique index on
`event_id`, which nothing reads by (see shared/outbox.py).

Revision ID: 0002
"""

from alembic import op

from shared.migrations import outbox_pending_ids, outbox_published_at

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    outbox_pending_ids(op, "registry")


def downgrade() -> None:
    outbox_published_at(op, "registry")

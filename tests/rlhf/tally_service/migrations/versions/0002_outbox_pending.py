"""Version 2 of the outbox (unsent rows as ids in `outbox_pending`): shared/migrations.outbox_version_2.

Revision ID: 0002
"""

from shared.migrations import outbox_version_2

revision = "0002"
down_revision = "0001"
upgrade, downgrade = outbox_version_2("tally")

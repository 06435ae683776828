"""Version 2 of the outbox (unsent rows as ids in `outbox_pending`): shared/migrations.outbox_version_2.

Revision ID: 0004
"""

from shared.migrations import outbox_version_2

revision = "0004"
down_revision = "0003"
upgrade, downgrade = outbox_version_2("curation")

"""The accounts service's tables, in the identity schema `rlhf_auth`.

The keys and their audit trail are defined once, in shared/auth.py, because every service reads the
keys (and migrates the schema at start-up, so that none waits for this one); this service is the
only one that changes them, and adds its outbox and processed-events tables beside them."""

from shared import auth
from shared.consumer import processed_events_table
from shared.db import naming_metadata
from shared.outbox import outbox_tables

SCHEMA = auth.AUTH_SCHEMA

metadata = naming_metadata(SCHEMA)
api_keys = auth.api_keys.to_metadata(metadata)
key_audit = auth.key_audit.to_metadata(metadata)
outbox, outbox_pending = outbox_tables(metadata)
processed_events = processed_events_table(metadata)

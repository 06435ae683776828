"""Alembic per service: each service keeps its revisions in `services/<name>/migrations/versions`
and its version table in its own schema; one env.py (shared/migrations_env) serves them all. Runs
are serialised with an advisory lock, so every process may call `upgrade` at start-up safely."""

from pathlib import Path

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.outbox import pending_trigger_ddl

ENV_LOCATION = Path(__file__).parent / "migrations_env"


async def upgrade(engine: AsyncEngine, *, metadata: MetaData, versions: Path) -> None:
    """Migrate the schema of `metadata` to the head of the revisions in `versions`."""
    schema = metadata.schema
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": f"migrate:{schema}"})
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.run_sync(_upgrade, metadata, versions)


def _upgrade(connection, metadata: MetaData, versions: Path) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(ENV_LOCATION))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(versions))
    cfg.attributes.update(connection=connection, metadata=metadata)
    command.upgrade(cfg, "head")


def run_env() -> None:
    """The body of shared/migrations_env/env.py."""
    metadata: MetaData = context.config.attributes["metadata"]
    context.configure(
        connection=context.config.attributes["connection"],
        target_metadata=metadata,
        version_table_schema=metadata.schema,
    )
    with context.begin_transaction():
        context.run_migrations()


def create_backbone_tables(op, schema: str) -> None:
    """Version 1 of the outbox and processed-events tables, as every service's first migration makes
    them; `outbox_pending_ids` makes version 2 (a new service's first migration calls both, the others
    reach it by a revision of `outbox_version_2`)."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("organization", sa.Text, nullable=False),
        sa.Column("correlation_id", sa.Text, nullable=False),
        sa.Column("envelope", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        schema=schema,
    )
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["id"], schema=schema, postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=schema,
    )


def outbox_pending_ids(op, schema: str) -> None:
    """Version 2 of the outbox (see shared/outbox.py): what is unsent becomes a row of `outbox_pending`,
    filled by a trigger, instead of a null `published_at` that the relay updated; and no unique index
    on `event_id`."""
    op.create_table("outbox_pending", sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
                    schema=schema)
    op.execute(f'INSERT INTO "{schema}".outbox_pending (id) '
               f'SELECT id FROM "{schema}".outbox WHERE published_at IS NULL')
    op.drop_index("ix_outbox_unpublished", "outbox", schema=schema)
    op.drop_column("outbox", "published_at", schema=schema)
    for statement in pending_trigger_ddl(schema):
        op.execute(statement)
    # Nothing looks an event up by its id in the outbox, and a repeated id is harmless (consumers
    # dedupe by it): its unique index was one random-key insert per event for no reader.
    op.execute(f"""DO $$ DECLARE name text; BEGIN
        SELECT conname INTO name FROM pg_constraint WHERE conrelid = '"{schema}".outbox'::regclass AND contype = 'u';
        IF name IS NOT NULL THEN EXECUTE format('ALTER TABLE %I.outbox DROP CONSTRAINT %I', '{schema}', name); END IF;
    END $$""")


def outbox_published_at(op, schema: str) -> None:
    """Back to version 1: rows still pending are unpublished, the others published now."""
    op.execute(f'DROP TRIGGER outbox_enqueue ON "{schema}".outbox')
    op.execute(f'DROP FUNCTION "{schema}".outbox_enqueue()')
    op.add_column("outbox", sa.Column("published_at", sa.DateTime(timezone=True), nullable=True), schema=schema)
    op.execute(f'UPDATE "{schema}".outbox o SET published_at = now() '
               f'WHERE NOT EXISTS (SELECT 1 FROM "{schema}".outbox_pending p WHERE p.id = o.id)')
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["id"], schema=schema, postgresql_where=sa.text("published_at IS NULL")
    )
    op.drop_table("outbox_pending", schema=schema)
    op.create_unique_constraint("uq_outbox_event_id", "outbox", ["event_id"], schema=schema)


def outbox_version_2(schema: str):
    """A service's revision to version 2 of its outbox, both ways: `upgrade, downgrade = outbox_version_2(schema)`."""
    return (lambda: outbox_pending_ids(op, schema)), (lambda: outbox_published_at(op, schema))

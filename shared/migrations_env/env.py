"""Alembic's env.py for every service: the connection, schema and metadata come from `upgrade`."""

from shared.migrations import run_env

run_env()

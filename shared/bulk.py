"""Bulk writes inside a SQLAlchemy session's transaction, on its asyncpg connection: COPY for
batches (several times faster than INSERT), a prepared INSERT for a few rows (COPY's extra round
trips cost more than it saves there), and whole batches as one JSON parameter.

SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement that goes through it. A
statement sent on the driver connection before that runs outside the unit of work's transaction:
committed at once, and kept when the unit of work rolls back. So every write here either goes
through the adapter (`exec_driver_sql`) or begins the adapter's transaction first."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

COPY_THRESHOLD = 16


def uses_copy(rows: int) -> bool:
    """Whether `copy_or_insert` writes this many rows with COPY."""
    return rows >= COPY_THRESHOLD


async def transaction_time(session: AsyncSession) -> datetime:
    """The start of the session's transaction, PostgreSQL's now(): what a column's DEFAULT now() gives
    every row the transaction writes. Begins the transaction through the adapter if it has not yet."""
    conn = await session.connection()
    return (await conn.exec_driver_sql("SELECT now()")).scalar_one()


async def copy_or_insert(
    session: AsyncSession, schema: str, table: str, columns: Sequence[str], records: Sequence[Sequence[Any]]
) -> None:
    if not records:
        return
    conn = await session.connection()
    if not uses_copy(len(records)):
        names = ", ".join(f'"{c}"' for c in columns)
        params = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        # Through the adapter (asyncpg's executemany on a prepared statement): inside the transaction.
        await conn.exec_driver_sql(f'INSERT INTO "{schema}"."{table}" ({names}) VALUES ({params})',
                                   [tuple(r) for r in records])
        return
    raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
    # COPY has no adapter call: if the adapter has not sent its BEGIN yet, make it send it (a statement
    # through it); once a statement of this unit of work has, a second round trip would add nothing.
    if not raw.is_in_transaction():
        await conn.exec_driver_sql("SELECT 1")
    await raw.copy_records_to_table(table, schema_name=schema, columns=list(columns), records=records)


async def execute_json(session: AsyncSession, sql: str, rows: Sequence[Any], *args: Any) -> list[Any]:
    """Runs `sql` with a whole batch as ONE jsonb parameter, `$1`, read back in SQL with
    `jsonb_to_recordset($1::jsonb) AS f(column type, …)` (JSON arrays become PostgreSQL arrays; a list of
    scalars is `jsonb_array_elements_text($1::jsonb)`), `args` as $2, …, in the session's transaction.
    Returns the rows the statement returns.

    Why JSON: orjson writes a 500-row batch in ~1 µs a row and PostgreSQL parses it in C, where one
    array parameter per column costs asyncpg ~1 µs per element in type checks, and a SQLAlchemy
    multi-row VALUES ~0.3 s to compile. One prepared statement, one round trip, any batch size."""
    if not rows:
        return []
    conn = await session.connection()
    # str() for what orjson does not know: asyncpg's own UUID type, as read back from a row.
    result = await conn.exec_driver_sql(sql, (orjson.dumps(rows, default=str).decode(), *args))
    return result.all() if result.returns_rows else []

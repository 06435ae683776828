"""Bulk writes inside a SQLAlchemy session's transaction, on its asyncpg connection: COPY for
batches (several times faster than INSERT), a prepared INSERT for a few rows (COPY's extra round
trips cost more than it saves there)."""

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

COPY_THRESHOLD = 16


async def copy_or_insert(
    session: AsyncSession, schema: str, table: str, columns: Sequence[str], records: Sequence[tuple]
) -> None:
    if not records:
        return
    conn = await session.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    if len(records) >= COPY_THRESHOLD:
        await raw.copy_records_to_table(table, schema_name=schema, columns=list(columns), records=records)
        return
    names = ", ".join(f'"{c}"' for c in columns)
    params = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await raw.executemany(f'INSERT INTO "{schema}"."{table}" ({names}) VALUES ({params})', records)

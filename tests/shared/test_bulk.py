"""Bulk writes on the session's asyncpg connection belong to the unit of work's transaction: what a
failed unit of work wrote by COPY, prepared INSERT or a JSON batch is rolled back with it."""

import uuid

import pytest
import pytest_asyncio
from sqlalchemy import Column, Integer, MetaData, Table, Text, text

from shared.bulk import copy_or_insert, execute_json
from shared.db import Database

pytestmark = pytest.mark.asyncio


class Boom(Exception):
    pass


@pytest_asyncio.fixture
async def scratch(migrated):
    schema = f"bulk_{uuid.uuid4().hex[:8]}"
    metadata = MetaData(schema=schema)
    Table("rows", metadata, Column("n", Integer), Column("label", Text))
    db = Database(migrated.database_url, schema=schema, producer="tests", pool_size=2)
    async with db.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(metadata.create_all)
    yield db, schema
    async with db.engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await db.dispose()


async def count(db: Database, schema: str) -> int:
    async with db.engine.connect() as conn:
        return (await conn.execute(text(f'SELECT count(*) FROM "{schema}".rows'))).scalar_one()


@pytest.mark.parametrize("rows", [3, 100], ids=["prepared insert", "copy"])
async def test_a_bulk_write_as_the_first_statement_is_rolled_back_with_its_unit_of_work(scratch, rows):
    db, schema = scratch
    with pytest.raises(Boom):
        async with db.unit_of_work() as uow:
            await copy_or_insert(uow.session, schema, "rows", ["n", "label"], [(i, "x") for i in range(rows)])
            raise Boom
    assert await count(db, schema) == 0
    async with db.unit_of_work() as uow:
        await copy_or_insert(uow.session, schema, "rows", ["n", "label"], [(i, "x") for i in range(rows)])
    assert await count(db, schema) == rows


async def test_a_json_batch_as_the_first_statement_is_rolled_back_with_its_unit_of_work(scratch):
    db, schema = scratch
    sql = (f'INSERT INTO "{schema}".rows (n, label) '
           "SELECT * FROM jsonb_to_recordset($1::jsonb) AS f(n int, label text) RETURNING n")
    with pytest.raises(Boom):
        async with db.unit_of_work() as uow:
            assert len(await execute_json(uow.session, sql, [{"n": 1, "label": "a"}, {"n": 2, "label": "b"}])) == 2
            raise Boom
    assert await count(db, schema) == 0
    async with db.unit_of_work() as uow:
        returned = await execute_json(uow.session, sql, [{"n": 1, "label": "a"}, {"n": 2, "label": None}])
    assert sorted(r[0] for r in returned) == [1, 2]
    assert await count(db, schema) == 2

"""Fixtures of the accounts tests: its HTTP app in-process on the real database, and admin keys."""

import pytest_asyncio

from services.accounts.main import SPEC
from shared.service import migrate
from tests.support import in_process_api, service_database


@pytest_asyncio.fixture(scope="session")
async def accounts_db(migrated):
    async with service_database(SPEC, migrated.database_url) as db:
        await migrate(SPEC, db)  # a no-op once accounts is one of the stack's services
        yield db


@pytest_asyncio.fixture
async def api(accounts_db, settings):
    async with in_process_api(SPEC, accounts_db, settings) as client:
        yield client


@pytest_asyncio.fixture
async def admin(make_key, org):
    return await make_key(org, "admin")

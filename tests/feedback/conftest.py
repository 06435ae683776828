import pytest_asyncio

from services.feedback.main import SPEC
from tests.support import in_process_api, service_database


@pytest_asyncio.fixture(scope="session")
async def feedback_db(migrated):
    async with service_database(SPEC, migrated.database_url) as db:
        yield db


@pytest_asyncio.fixture
async def api(feedback_db, settings):
    """The feedback service's HTTP app in-process, on the real database."""
    async with in_process_api(SPEC, feedback_db, settings) as client:
        yield client

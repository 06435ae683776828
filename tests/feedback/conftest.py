import httpx
import pytest_asyncio

from services.feedback.main import SPEC
from shared.db import Database
from shared.service import build_app


@pytest_asyncio.fixture(scope="session")
async def feedback_db(migrated):
    db = Database(migrated.database_url, schema=SPEC.schema, producer=SPEC.name, pool_size=5)
    yield db
    await db.dispose()


@pytest_asyncio.fixture
async def api(feedback_db, settings):
    """The feedback service's HTTP app in-process, on the real database."""
    app = build_app(SPEC, feedback_db, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://feedback") as client:
        yield client

import uuid
from datetime import UTC, datetime

import pytest_asyncio

from services.curation import handlers
from services.curation.main import SPEC
from shared.consumer import Delivery
from shared.events import FeedbackReceived, FeedbackReviewed
from shared.objectstore import LocalObjectStore
from tests.support import in_process_api, service_database


@pytest_asyncio.fixture(scope="session")
async def curation_db(migrated):
    async with service_database(SPEC, migrated.database_url) as db:
        yield db


@pytest_asyncio.fixture
async def store(tmp_path):
    return LocalObjectStore(tmp_path / "objects")


@pytest_asyncio.fixture
async def api(curation_db, settings, store):
    """The curation service's HTTP app in-process, on the real database, exporting to a temp directory."""
    async with in_process_api(SPEC, curation_db, settings, object_store=store) as client:
        yield client


@pytest_asyncio.fixture
async def feed(curation_db):
    """Feeds FeedbackReceived / FeedbackReviewed events through the service's own projection handlers
    (the bus tests prove the same path from the real feedback service)."""

    async def received(org: str, query: str, response: str, feedback_type: str, value: dict | None = None) -> uuid.UUID:
        event = FeedbackReceived(query=query, response=response, feedback_type=feedback_type,
                                 feedback_value=value or {}, feedback_id=uuid.uuid4(), created_at=datetime.now(UTC),
                                 source="http")
        async with curation_db.unit_of_work() as uow:
            await handlers.project_received_feedback(uow, [Delivery(event.envelope(organization=org, producer="t"),
                                                                    event)])
        return event.feedback_id

    async def reviewed(org: str, feedback_id: uuid.UUID, status: str, correction: str | None = None) -> None:
        event = FeedbackReviewed(feedback_id=feedback_id, status=status, previous_status="pending",
                                 correction=correction, reviewed_at=datetime.now(UTC))
        async with curation_db.unit_of_work() as uow:
            await handlers.project_reviewed_feedback(uow, [Delivery(event.envelope(organization=org, producer="t"),
                                                                    event)])

    return received, reviewed

"""A service as small as the shape allows, living in the test suite: it tallies FeedbackReceived
per organization and answers GET /api/tallies. Nothing outside this folder names it; the test
adds it to the stack by its module alone (RLHF_SERVICES), as a new product service is added by
one line in `services.SERVICES`."""

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from fastapi import APIRouter
from sqlalchemy import Column, Integer, Table, Text, select
from sqlalchemy.dialects.postgresql import insert

from shared import service
from shared.consumer import Delivery, processed_events_table
from shared.db import UnitOfWork, naming_metadata
from shared.events import FeedbackReceived
from shared.http import DB, Viewer
from shared.outbox import outbox_tables

metadata = naming_metadata("tally")
tallies = Table("tallies", metadata, Column("organization", Text, primary_key=True), Column("count", Integer))
outbox_tables(metadata)
processed_events_table(metadata)


async def count_received_feedback(uow: UnitOfWork, deliveries: Sequence[Delivery[FeedbackReceived]]) -> None:
    for organization, n in Counter(d.envelope.organization for d in deliveries).items():
        stmt = insert(tallies).values(organization=organization, count=n)
        await uow.session.execute(
            stmt.on_conflict_do_update(index_elements=["organization"], set_={"count": tallies.c.count + n})
        )


router = APIRouter(prefix="/api/tallies")


@router.get("")
async def tally(principal: Viewer, database: DB) -> dict:
    async with database.read() as session:
        stmt = select(tallies.c.count).where(tallies.c.organization == principal.organization)
        return {"organization": principal.organization, "feedback_received": (await session.scalar(stmt)) or 0}


SPEC = service.ServiceSpec(
    name="tally",
    port=8099,
    metadata=metadata,
    migrations=Path(__file__).parent / "migrations",
    routers=[router],
    subscriptions={FeedbackReceived: count_received_feedback},
)

if __name__ == "__main__":
    service.main(SPEC)

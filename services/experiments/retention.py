"""Which experiment served a response is kept for RLHF_SERVED_RESPONSE_RETENTION_DAYS (default 30,
the same variable as the feedback service's copy): feedback arriving later is counted as unmatched.
An hourly sweep in the service's background role deletes older rows."""

import asyncio
import os
from datetime import UTC, datetime, timedelta

from services.experiments import repository
from shared.db import Database
from shared.observability import get_logger
from shared.settings import Settings

log = get_logger(__name__)
SWEEP_SECONDS = 3600


def retention_days() -> float:
    return float(os.environ.get("RLHF_SERVED_RESPONSE_RETENTION_DAYS", "30"))


async def prune_served_responses(db: Database, settings: Settings) -> None:
    while True:
        try:
            cutoff = datetime.now(UTC) - timedelta(days=retention_days())
            async with db.unit_of_work() as uow:
                removed = await repository.prune_served(uow.session, cutoff)
            if removed:
                log.info("served responses pruned", removed=removed)
        except Exception as exc:  # the database away for a moment: the next sweep tries again
            log.warning("served responses not pruned", error=str(exc))
        await asyncio.sleep(SWEEP_SECONDS)

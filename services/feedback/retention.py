"""Served responses are kept for RLHF_SERVED_RESPONSE_RETENTION_DAYS (default 30): an hourly sweep
in the service's background role deletes older ones (feedback already stored keeps its copy)."""

import asyncio

from services.feedback import handlers
from shared.db import Database
from shared.observability import get_logger
from shared.settings import Settings

log = get_logger(__name__)
SWEEP_SECONDS = 3600


async def prune_served_responses(db: Database, settings: Settings) -> None:
    while True:
        try:
            async with db.unit_of_work() as uow:
                removed = await handlers.prune_served_responses(uow)
            if removed:
                log.info("served responses pruned", removed=removed)
        except Exception as exc:  # the database away for a moment: the next sweep tries again
            log.warning("served responses not pruned", error=str(exc))
        await asyncio.sleep(SWEEP_SECONDS)

"""Served answers and exposures, written in batches: the request path only appends to a list; a
task of the API process writes what gathered every `interval` seconds (or sooner, at `max_batch`)
in one unit of work, and at shutdown (drain_all). A crash loses at most the last interval's
exposures and announcements; the answers themselves were already delivered."""

import asyncio
import uuid
import weakref

from services.experiments import handlers
from shared.db import Database
from shared.observability import get_logger

log = get_logger(__name__)
_BATCHERS: "weakref.WeakSet[Batcher]" = weakref.WeakSet()


class Batcher:
    def __init__(self, db: Database, *, interval: float = 0.1, max_batch: int = 1000):
        self.db = db
        self.interval = interval
        self.max_batch = max_batch
        self._served: list[handlers.Served] = []
        self._exposures: list[tuple[uuid.UUID, str, str]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        _BATCHERS.add(self)

    def served(self, item: handlers.Served) -> None:
        self._served.append(item)
        self._kick()

    def exposure(self, experiment_id: uuid.UUID, unit: str, variant: str) -> None:
        self._exposures.append((experiment_id, unit, variant))
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        if len(self._served) + len(self._exposures) >= self.max_batch:
            self._wake.set()

    async def _run(self) -> None:
        while self._served or self._exposures:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()
        self._idle.set()

    async def flush(self) -> None:
        served, self._served = self._served, []
        exposures, self._exposures = self._exposures, []
        if not served and not exposures:
            return
        for attempt in range(3):
            try:
                async with self.db.unit_of_work() as uow:
                    await handlers.record_served(uow, served)
                    await handlers.record_exposures(uow, exposures)
                return
            except Exception as exc:  # the database away for a moment: try again, then give up loudly
                log.warning("served batch not written", attempt=attempt + 1, error=str(exc), size=len(served))
                await asyncio.sleep(0.2 * 2**attempt)
        log.error("served batch dropped", served=len(served), exposures=len(exposures))

    async def drain(self) -> None:
        """Everything appended so far is written (used at shutdown and by tests)."""
        self._wake.set()
        await self._idle.wait()


async def drain_all() -> None:
    """At shutdown: what the process's batchers hold is written before it exits."""
    for batcher in list(_BATCHERS):
        await batcher.drain()

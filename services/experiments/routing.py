"""Where a request for a model name goes: the name's deployed version, or with a live experiment the
variant of the caller's unit. Routes are read from the service's own tables (kept from the registry's
events) and cached for a moment per name, so the hot path costs no database round trip."""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.experiments import domain, repository
from shared.db import Database


@dataclass(frozen=True)
class Target:
    version_id: uuid.UUID
    version: str
    model_id: str
    serving: dict[str, Any]


@dataclass(frozen=True)
class LiveExperiment:
    id: uuid.UUID
    seed: str
    traffic_split: float
    status: str
    control: Target
    treatment: Target


@dataclass(frozen=True)
class Route:
    name: str
    deployed: Target | None
    experiment: LiveExperiment | None


@dataclass(frozen=True)
class Choice:
    target: Target
    experiment_id: uuid.UUID | None
    variant: str | None


def _target(row) -> Target:
    return Target(row.id, row.version, row.model_id, row.serving)


def choose(route: Route, unit: str) -> Choice | None:
    """The version a unit's request goes to. A paused experiment sends everyone to control (its
    exposures still count as control's)."""
    exp = route.experiment
    if exp is not None:
        variant = domain.assign(exp.seed, unit, exp.traffic_split, status=exp.status)
        target = exp.treatment if variant == domain.TREATMENT else exp.control
        return Choice(target, exp.id, variant)
    if route.deployed is not None:
        return Choice(route.deployed, None, None)
    return None


async def load(db: Database, organization: str, name: str) -> Route | None:
    async with db.read() as session:
        deployed = await repository.deployed_version(session, organization, name)
        exp = await repository.live_experiment(session, organization, name)
        live = None
        if exp is not None:
            found = await repository.versions(session, organization, [exp.control_model_id, exp.treatment_model_id])
            if exp.control_model_id in found and exp.treatment_model_id in found:
                live = LiveExperiment(exp.id, exp.seed, exp.traffic_split, exp.status,
                                      _target(found[exp.control_model_id]), _target(found[exp.treatment_model_id]))
    if deployed is None and live is None:
        return None
    return Route(name, _target(deployed) if deployed else None, live)


@dataclass(frozen=True)
class Assignable:
    """What /assign needs of an experiment."""

    id: uuid.UUID
    seed: str
    traffic_split: float
    status: str
    control_model_id: uuid.UUID
    treatment_model_id: uuid.UUID


async def load_assignable(db: Database, organization: str, experiment_id: uuid.UUID) -> Assignable | None:
    async with db.read() as session:
        row = await repository.get_experiment(session, organization, experiment_id)
    if row is None:
        return None
    return Assignable(row.id, row.seed, row.traffic_split, row.status, row.control_model_id, row.treatment_model_id)


class TTLCache:
    """Values per key, each kept `ttl` seconds, loaded once however many requests wait on them: a
    deploy, rollback or experiment change reaches the router within `ttl`."""

    def __init__(self, ttl: float = 0.5):
        self.ttl = ttl
        self._values: dict[Any, tuple[float, Any]] = {}
        self._loading: dict[Any, asyncio.Future] = {}

    async def get(self, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        cached = self._values.get(key)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
            self._values[key] = (time.monotonic(), value)
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._loading[key]

    def forget(self, key: Any) -> None:
        self._values.pop(key, None)


class RouteCache:
    """Routes per (organization, name) and experiments per id, from the service's tables."""

    def __init__(self, db: Database, ttl: float = 0.5):
        self.db = db
        self._cache = TTLCache(ttl)

    async def get(self, organization: str, name: str) -> Route | None:
        return await self._cache.get(("route", organization, name), lambda: load(self.db, organization, name))

    async def experiment(self, organization: str, experiment_id: uuid.UUID) -> Assignable | None:
        return await self._cache.get(("experiment", organization, experiment_id),
                                     lambda: load_assignable(self.db, organization, experiment_id))

    def forget(self, organization: str, experiment_id: uuid.UUID, model_name: str) -> None:
        """A change this process made is seen by its next request (other processes: within ttl)."""
        self._cache.forget(("experiment", organization, experiment_id))
        self._cache.forget(("route", organization, model_name))

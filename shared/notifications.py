"""PostgreSQL LISTEN/NOTIFY: a NOTIFY sent inside a transaction reaches every listening process when
(and only if) the transaction commits. Used to wake the outbox relays and to spread key revocations.

A `ChannelListener` keeps one connection LISTENing on one channel and reconnects in the background
when it is lost (at most every `retry_seconds`); where LISTEN is impossible (a pooler in
transaction mode) `listening` stays False and its users fall back to what they did before."""

import asyncio
import math
import time
from collections.abc import Callable

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.observability import get_logger

log = get_logger(__name__)


def dsn_of(engine: AsyncEngine) -> str:
    """The engine's database as a plain asyncpg DSN."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class ChannelListener:
    def __init__(
        self,
        dsn: str,
        channel: str,
        on_notify: Callable[[str], None],
        *,
        on_lost: Callable[[], None] = lambda: None,
        retry_seconds: float = 1.0,
    ):
        self.dsn = dsn
        self.channel = channel
        self.on_notify = on_notify
        self.on_lost = on_lost
        self.retry_seconds = retry_seconds
        self._conn: asyncpg.Connection | None = None
        self._connecting: asyncio.Task | None = None
        self._tried_at = -math.inf

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def ensure(self) -> bool:
        """Whether notifications are heard now; if not, starts (re)connecting in the background."""
        if self.listening:
            return True
        if self._connecting is None and time.monotonic() - self._tried_at >= self.retry_seconds:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        return False

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self.listening:
            conn, self._conn = self._conn, None
            await conn.close()

    async def _connect(self) -> None:
        self._tried_at = time.monotonic()
        try:
            conn = await asyncpg.connect(self.dsn, timeout=5)
            await conn.add_listener(self.channel, lambda _conn, _pid, _channel, payload: self.on_notify(payload))
            conn.add_termination_listener(self._lost)
            self._conn = conn
        except Exception as exc:
            log.warning("cannot listen; falling back", channel=self.channel, error=str(exc))
        finally:
            self._connecting = None

    def _lost(self, _conn) -> None:
        self._conn = None
        self.on_lost()

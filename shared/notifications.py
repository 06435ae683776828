"""PostgreSQL LISTEN/NOTIFY: a NOTIFY sent inside a transaction reaches every listening process when
(and only if) the transaction commits. Used to spread key revocations, and (after the fact, by a
`ChannelNotifier`) to wake the outbox relays.

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


class ChannelNotifier:
    """Sends NOTIFYs on one channel from a connection of its own, after the commits they announce:
    `poke()` after a commit; one NOTIFY goes out at once, and the pokes that come while it travels are
    answered by one more. A payload-less wakeup needs no more than that.

    Not a NOTIFY inside the announcing transaction: PostgreSQL serializes the commits of notifying
    transactions (a database-wide lock held until the commit is flushed), which made every batch
    wait for every other's flush. Here the NOTIFY is a transaction of its own, not flushed
    (synchronous_commit off: a wakeup lost in a crash is caught by the listeners' safety poll), and
    no request waits for it. A NOTIFY that cannot be sent is dropped the same way; the notifier
    reconnects at its next poke, at most every `retry_seconds`."""

    def __init__(self, dsn: str, channel: str, *, retry_seconds: float = 1.0):
        self.dsn = dsn
        self.channel = channel
        self.retry_seconds = retry_seconds
        self._statement = f'NOTIFY "{channel}"'
        self._poked = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._conn: asyncpg.Connection | None = None
        self.sent = 0  # NOTIFYs that reached the server: how many pokes they took is what coalescing saved

    def poke(self) -> None:
        self._poked.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._poked.wait()
            self._poked.clear()  # before sending: a poke from now on gets a NOTIFY sent after it
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.dsn, timeout=5,
                                                       server_settings={"synchronous_commit": "off"})
                await self._conn.execute(self._statement)
                self.sent += 1
            except Exception as exc:  # database away or connection lost: this wakeup is dropped
                log.warning("cannot notify; listeners fall back to polling", channel=self.channel, error=str(exc))
                self._discard()
                await asyncio.sleep(self.retry_seconds)

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # not close(): it would wait on a server that may be gone

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

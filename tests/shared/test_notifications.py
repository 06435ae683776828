"""LISTEN/NOTIFY on the real database: a ChannelNotifier's NOTIFY reaches a ChannelListener; a burst of
pokes costs one NOTIFY (and one more for pokes made while it travels); a notifier whose connection was
killed drops that wakeup and sends the next one on a new connection."""

import asyncio
import uuid

import asyncpg
import pytest

from shared.db import async_url
from shared.notifications import ChannelListener, ChannelNotifier
from tests.support import eventually

pytestmark = pytest.mark.asyncio


def plain_dsn(url: str) -> str:
    return async_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)


async def listening(dsn: str, channel: str, heard: list[str]) -> ChannelListener:
    listener = ChannelListener(dsn, channel, heard.append)
    listener.ensure()
    await eventually(lambda: asyncio.sleep(0, listener.listening))
    return listener


async def test_a_burst_of_pokes_is_one_notify_and_listeners_hear_it(migrated):
    dsn, channel, heard = plain_dsn(migrated.database_url), f"test_{uuid.uuid4().hex[:8]}", []
    listener = await listening(dsn, channel, heard)
    notifier = ChannelNotifier(dsn, channel)
    try:
        for _ in range(1000):  # all before the notifier's task first runs
            notifier.poke()
        await eventually(lambda: asyncio.sleep(0, len(heard) == 1))
        await asyncio.sleep(0.3)
        assert notifier.sent == 1 and len(heard) == 1

        notifier.poke()  # a later commit: a NOTIFY of its own
        await eventually(lambda: asyncio.sleep(0, len(heard) == 2))
        assert notifier.sent == 2
    finally:
        await notifier.close()
        await listener.close()


async def test_a_notifier_whose_connection_was_killed_notifies_again_on_a_new_one(migrated):
    dsn, channel, heard = plain_dsn(migrated.database_url), f"test_{uuid.uuid4().hex[:8]}", []
    listener = await listening(dsn, channel, heard)
    notifier = ChannelNotifier(dsn, channel, retry_seconds=0.1)
    admin = await asyncpg.connect(dsn)
    try:
        notifier.poke()
        await eventually(lambda: asyncio.sleep(0, len(heard) == 1))
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", notifier._conn.get_server_pid())

        async def poked_and_heard() -> bool:
            notifier.poke()
            await asyncio.sleep(0.05)
            return len(heard) >= 2

        await eventually(poked_and_heard, timeout=10)
        assert notifier.sent >= 2
    finally:
        await admin.close()
        await notifier.close()
        await listener.close()

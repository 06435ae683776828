"""The chaos run at 10,000 items (bench/chaos.py runs it at 100,000): feedback over HTTP and on the
bus at once while roles of both services are SIGKILLed and restarted. Nothing is lost, nothing is
stored or applied twice, nothing is dead-lettered, and the consumers catch up."""

import pytest

from bench.chaos import ROLES, chaos, render
from tests.support import isolated_infrastructure

pytestmark = pytest.mark.asyncio
ITEMS = 10_000


async def test_chaos_run_loses_and_duplicates_nothing(migrated, tmp_path):
    async with isolated_infrastructure(migrated.database_url, "chaos") as (url, broker):
        r = await chaos(url, broker.bootstrap, tmp_path, items=ITEMS, kills=5, duration=10, seed=11)
    print(render(r))
    assert sorted(k["role"] for k in r["kills"]) == sorted(ROLES)  # every role killed once
    assert (r["stored"], r["stored_distinct"], r["projected"]) == (ITEMS, ITEMS, ITEMS)
    assert r["announced_items"] == ITEMS  # every FeedbackReceived published at least once...
    assert r["applied_events"] == r["announced_events"] == ITEMS  # ...and applied once
    assert r["dead_lettered"] == 0
    assert (r["lag_feedback"], r["lag_curation"]) == (0, 0)

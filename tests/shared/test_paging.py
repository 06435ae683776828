"""Keyset paging helpers (pure, no I/O)."""

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from shared.paging import InvalidCursor, created_cursor, decode_cursor, encode_cursor, page_of


def test_cursor_round_trip_and_garbage():
    at, ident = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(at, ident)) == (at, ident)
    for garbage in ["garbage!", "", "bm90LWEtY3Vyc29y"]:
        with pytest.raises(InvalidCursor):
            decode_cursor(garbage)


def test_page_of_uses_the_extra_row_only_to_say_there_is_more():
    rows = [SimpleNamespace(created_at=datetime(2026, 1, d, tzinfo=UTC), id=uuid.uuid4()) for d in (3, 2, 1)]
    page, cursor = page_of(rows, 2, created_cursor)
    assert page == rows[:2] and decode_cursor(cursor) == (rows[1].created_at, rows[1].id)
    assert page_of(rows[:2], 2, created_cursor) == (rows[:2], None)

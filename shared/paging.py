"""Keyset paging, the same in every service: newest first on (created_at, id), an opaque cursor."""

import base64
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from shared.errors import DomainError
from shared.input_guard import in_utc

T = TypeVar("T")


class InvalidCursor(DomainError):
    """A cursor this API did not hand out (400)."""

    status, code = 400, "invalid_cursor"

    def __init__(self, message: str):
        super().__init__(message, field="cursor")


def encode_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, ident = raw.partition("|")
        return in_utc(datetime.fromisoformat(created)), uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this API returned") from exc


def page_of(rows: Sequence[T], limit: int, cursor_of: Callable[[T], str]) -> tuple[list[T], str | None]:
    """`rows` was fetched with limit + 1: the extra row only says there is a next page."""
    more = len(rows) > limit
    rows = list(rows[:limit])
    return rows, (cursor_of(rows[-1]) if more else None)


def created_cursor(row) -> str:
    return encode_cursor(row.created_at, row.id)

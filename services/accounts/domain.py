"""Pure rules of API keys: their status, what a lifecycle step may do, the errors."""

from datetime import UTC, datetime
from typing import Literal

from shared.auth import Forbidden
from shared.errors import Conflict, Invalid, NotFound

KeyStatus = Literal["active", "revoked", "expired"]
STATUSES = ("active", "revoked", "expired")
MAX_NAME = 200


class KeyNotFound(NotFound):
    def __init__(self, key_id: str):
        super().__init__(f"no API key {key_id!r} in your organization", code="key_not_found")


class KeyAlreadyRevoked(Conflict):
    def __init__(self, key_id: str):
        super().__init__(f"API key {key_id!r} is already revoked", code="key_revoked")


class OtherOrganization(Forbidden):
    def __init__(self, mine: str, asked: str):
        super().__init__(
            f"your key acts for organization {mine!r}; keys of {asked!r} are made by an admin of {asked!r}"
            " (or by the platform's operator: `rlhf keys create --direct` on the database)"
        )


def status_of(revoked: bool, expires_at: datetime | None, now: datetime) -> KeyStatus:
    if revoked:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "active"


def check_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    """A new key's expiry: none, or a moment in the future with its time zone."""
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        raise Invalid("expires_at", "expires_at needs a time zone (e.g. 2027-01-01T00:00:00Z)")
    try:
        in_utc = expires_at.astimezone(UTC)
    except OverflowError:
        in_utc = datetime.max.replace(tzinfo=UTC)
    if in_utc.year >= 9999:
        raise Invalid("expires_at", "expires_at must be before the year 9999")
    if in_utc <= now:
        raise Invalid("expires_at", "expires_at must be in the future")
    return in_utc

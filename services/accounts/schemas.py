"""HTTP shapes of /api/keys. A key's listing never carries its secret or the secret's hash."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.accounts import domain

RoleName = Literal["viewer", "curator", "admin"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName
    name: str | None = Field(default=None, max_length=domain.MAX_NAME)
    expires_at: datetime | None = None
    # Optional: when given it must be the caller's own (keys are made for one's own organization).
    organization: str | None = Field(default=None, max_length=200)

    @field_validator("name")
    @classmethod
    def printable(cls, name: str | None) -> str | None:
        if name is not None and any(c < " " or c == "\x7f" or "\ud800" <= c <= "\udfff" for c in name):
            raise ValueError("the name must not hold control characters or lone surrogates")
        return name


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_at: datetime | None = None  # the new key's; none: it does not expire


class KeyOut(BaseModel):
    key_id: str
    organization: str
    role: RoleName
    name: str | None
    status: domain.KeyStatus
    created_at: datetime
    created_by: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_from: str | None


class IssuedKeyOut(KeyOut):
    key: str = Field(description="the API key itself: shown this once, stored only as a hash")


class KeyList(BaseModel):
    items: list[KeyOut]


class KeyAuditOut(BaseModel):
    id: int
    key_id: str
    action: Literal["created", "rotated", "revoked"]
    actor: str
    details: dict[str, Any]
    at: datetime


class KeyAuditPage(BaseModel):
    items: list[KeyAuditOut]
    next_cursor: str | None

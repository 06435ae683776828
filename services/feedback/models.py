"""The feedback service's tables, in its own schema `feedback`."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.consumer import processed_events_table
from shared.db import naming_metadata
from shared.outbox import outbox_tables

SCHEMA = "feedback"


class Base(DeclarativeBase):
    metadata = naming_metadata(SCHEMA)


class Feedback(Base):
    __tablename__ = "rlhf_feedback"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    organization: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str | None] = mapped_column(Text)
    query: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)
    feedback_type: Mapped[str] = mapped_column(Text)
    feedback_value: Mapped[dict[str, Any]] = mapped_column(JSONB)
    curator_email: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # review state
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    correction: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    notes: Mapped[str | None] = mapped_column(Text)
    reviewed_by: Mapped[str | None] = mapped_column(Text)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # attribution of the rated answer
    response_id: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[str | None] = mapped_column(Text)
    experiment_id: Mapped[str | None] = mapped_column(Text)
    variant: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text, server_default="http")

    __table_args__ = (
        Index("ix_rlhf_feedback_org_created", "organization", text("created_at DESC"), text("id DESC")),
        Index("ix_rlhf_feedback_org_status_created", "organization", "status", text("created_at DESC")),
        Index("ix_rlhf_feedback_tags", "tags", postgresql_using="gin"),
    )


class ServedResponse(Base):
    """An answer the experiments service's router served (from ResponseServed), kept for a while so
    that feedback may name only its response id."""

    __tablename__ = "served_responses"

    organization: Mapped[str] = mapped_column(Text, primary_key=True)
    response_id: Mapped[str] = mapped_column(Text, primary_key=True)
    query: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)
    model_id: Mapped[str] = mapped_column(Text)  # the registry's version id
    model_name: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(Text)
    experiment_id: Mapped[str | None] = mapped_column(Text)
    variant: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    served_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_served_responses_served_at", "served_at"),)


outbox, outbox_pending = outbox_tables(Base.metadata)
processed_events = processed_events_table(Base.metadata)

# Column order for COPY, which bulk ingest uses.
FEEDBACK_COPY_COLUMNS = [
    "id", "organization", "session_id", "query", "response", "feedback_type", "feedback_value",
    "curator_email", "created_at", "updated_at", "status", "tags", "response_id", "model_id",
    "experiment_id", "variant", "latency_ms", "source",
]

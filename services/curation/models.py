"""The curation service's tables, in its own schema `curation`: datasets, preference pairs, the
export history, and a projection of feedback built from FeedbackReceived / FeedbackReviewed
(curation never reads the feedback service's tables)."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Computed, DateTime, Float, ForeignKey, Identity, Index, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.consumer import processed_events_table
from shared.db import naming_metadata
from shared.outbox import outbox_tables

SCHEMA = "curation"


class Base(DeclarativeBase):
    metadata = naming_metadata(SCHEMA)


class TrainingDataset(Base):
    __tablename__ = "training_datasets"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    organization: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    dataset_type: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="draft")
    # Members of instruction-tuning datasets (approved feedback items); pair datasets hold pairs.
    feedback_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)), server_default="{}")
    sample_count: Mapped[int] = mapped_column(Integer, server_default="0")
    quality_score: Mapped[float | None] = mapped_column(Float)
    validation_report: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    export_format: Mapped[str | None] = mapped_column(Text)
    export_url: Mapped[str | None] = mapped_column(Text)
    export_version: Mapped[int] = mapped_column(Integer, server_default="0")
    system_prompt: Mapped[str | None] = mapped_column(Text)
    validation_ratio: Mapped[float] = mapped_column(Float, server_default="0.1")
    split_seed: Mapped[int] = mapped_column(Integer, server_default="0")
    auto_train: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Bumped on every change of content, so a manifest can say which content it was made from.
    content_version: Mapped[int] = mapped_column(Integer, server_default="1")
    curator_email: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_training_datasets_org_created", "organization", text("created_at DESC"), text("id DESC")),
        Index("ix_training_datasets_feedback_ids", "feedback_ids", postgresql_using="gin"),
    )


class PreferencePair(Base):
    __tablename__ = "preference_pairs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    organization: Mapped[str] = mapped_column(Text)
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_datasets.id", ondelete="CASCADE"))
    query: Mapped[str] = mapped_column(Text)
    chosen_response: Mapped[str] = mapped_column(Text)
    rejected_response: Mapped[str] = mapped_column(Text)
    preference_strength: Mapped[float] = mapped_column(Float)
    context_documents: Mapped[Any] = mapped_column(JSONB, server_default="[]")
    annotator_email: Mapped[str | None] = mapped_column(Text)
    annotation_notes: Mapped[str | None] = mapped_column(Text)
    # Provenance: the feedback the pair came from, how, and a key that makes bulk creation idempotent.
    source_feedback_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)), server_default="{}")
    strategy: Mapped[str] = mapped_column(Text, server_default="manual")
    source_key: Mapped[str | None] = mapped_column(Text)
    # Computed by PostgreSQL on every write (migration 0002): the split / near-duplicate prompt key
    # and the exact-duplicate key, so an export never recomputes them.
    prompt_key: Mapped[str] = mapped_column(
        Text, Computed("regexp_replace(lower(query), '[^[:alnum:]]+', '', 'g')", persisted=True)
    )
    exact_key: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        Computed("md5(query || chr(1) || chosen_response || chr(1) || rejected_response)::uuid", persisted=True),
    )
    # The order pairs were written in (migration 0003): an export's line order, which follows the
    # table's physical order; of identical pairs the first written is the one exported.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True))
    # A 64-bit hash of the prompt key (migration 0003), for counting which prompts are shared.
    prompt_hash: Mapped[int] = mapped_column(
        BigInteger,
        Computed("hashtextextended(regexp_replace(lower(query), '[^[:alnum:]]+', '', 'g'), 0)", persisted=True),
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_preference_pairs_org_created", "organization", text("created_at DESC"), text("id DESC")),
        Index("uq_preference_pairs_dataset_source", "dataset_id", "source_key", unique=True),
        Index("ix_preference_pairs_dataset_seq", "dataset_id", "seq"),
        Index(
            "ix_preference_pairs_dataset_prompt_hash", "dataset_id", "prompt_hash", postgresql_include=["organization"]
        ),
        Index(
            "ix_preference_pairs_dataset_exact", "dataset_id", "exact_key", "seq",
            postgresql_include=["id", "organization"],
        ),
    )


class DatasetExport(Base):
    """One immutable export version of a dataset."""

    __tablename__ = "dataset_exports"

    dataset_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("training_datasets.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(Text)
    validation_url: Mapped[str | None] = mapped_column(Text)
    validation_sha256: Mapped[str | None] = mapped_column(Text)
    manifest_url: Mapped[str] = mapped_column(Text)
    counts: Mapped[dict[str, int]] = mapped_column(JSONB)
    masked: Mapped[dict[str, int]] = mapped_column(JSONB)
    content_version: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FeedbackView(Base):
    """What curation knows of each feedback item, from the events. Content arrives with
    FeedbackReceived, review state with FeedbackReviewed, in either order."""

    __tablename__ = "feedback_projection"

    feedback_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    organization: Mapped[str] = mapped_column(Text)
    query: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
    feedback_type: Mapped[str | None] = mapped_column(Text)
    rating: Mapped[float | None] = mapped_column(Float)
    value_correction: Mapped[str | None] = mapped_column(Text)  # from a correction's feedback_value
    review_correction: Mapped[str | None] = mapped_column(Text)  # from the curator's review
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    session_id: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_feedback_projection_org_created", "organization", "created_at"),)


outbox, outbox_pending = outbox_tables(Base.metadata)
processed_events = processed_events_table(Base.metadata)

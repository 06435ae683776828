"""The training service's tables, in its own schema `training`."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, Integer, Numeric, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.consumer import processed_events_table
from shared.db import naming_metadata
from shared.outbox import outbox_tables

SCHEMA = "training"


class Base(DeclarativeBase):
    metadata = naming_metadata(SCHEMA)


class DatasetVersion(Base):
    """An exported dataset version this service learned of from DatasetExported."""

    __tablename__ = "dataset_versions"

    organization: Mapped[str] = mapped_column(Text, primary_key=True)
    dataset_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    export_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    dataset_type: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(Text)
    validation_url: Mapped[str | None] = mapped_column(Text)
    validation_sha256: Mapped[str | None] = mapped_column(Text)
    manifest_url: Mapped[str | None] = mapped_column(Text)
    counts: Mapped[dict[str, int]] = mapped_column(JSONB)
    auto_train: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FineTuningJob(Base):
    __tablename__ = "fine_tuning_jobs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    organization: Mapped[str] = mapped_column(Text)
    dataset_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    export_version: Mapped[int] = mapped_column(Integer)
    dataset_format: Mapped[str] = mapped_column(Text)
    training_url: Mapped[str] = mapped_column(Text)
    validation_url: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    suffix: Mapped[str | None] = mapped_column(Text)
    model_name: Mapped[str | None] = mapped_column(Text)  # what the registry registers its model as
    export_ref: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")  # shared.events.ExportRef
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # on the export's validation split
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    job_id: Mapped[str | None] = mapped_column(Text)  # the provider's id (the spec's name)
    provider_status: Mapped[str | None] = mapped_column(Text)
    provider_cursor: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    training_metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    resulting_model_id: Mapped[str | None] = mapped_column(Text)
    estimated_tokens: Mapped[int] = mapped_column(BigInteger)
    epochs: Mapped[int] = mapped_column(Integer)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_estimate: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    actual_cost: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    error_message: Mapped[str | None] = mapped_column(Text)
    submit_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    auto_launched: Mapped[bool] = mapped_column(Boolean, server_default="false")
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_fine_tuning_jobs_org_created", "organization", "created_at"),
        Index("ix_fine_tuning_jobs_status", "status"),
    )


class JobMetric(Base):
    """One point of a job's metrics history (the loss curve): one row per training step."""

    __tablename__ = "job_metrics"

    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, float]] = mapped_column(JSONB)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class JobEvent(Base):
    """What happened to a job, for people: status changes, provider messages, checkpoints."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    kind: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Budget(Base):
    __tablename__ = "budgets"

    organization: Mapped[str] = mapped_column(Text, primary_key=True)
    monthly_limit: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    updated_by: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AuditEntry(Base):
    """Who launched or cancelled which job, or changed the budget, and when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    organization: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_audit_log_org_at", "organization", "at"),)


outbox, outbox_pending = outbox_tables(Base.metadata)
processed_events = processed_events_table(Base.metadata)

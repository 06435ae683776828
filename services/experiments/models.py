"""The experiments service's tables, in its own schema `experiments`.

`ab_test_experiments` is the spec's table. Outcomes are kept as running sufficient statistics per
experiment, variant and metric (`outcome_stats`), so an analysis reads O(variants) rows however many
outcomes arrived. `model_versions` is this service's own view of the registry, kept from its events
(never read from the registry's tables): what each version is and how to call it."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.consumer import processed_events_table
from shared.db import naming_metadata
from shared.outbox import outbox_tables

SCHEMA = "experiments"


class Base(DeclarativeBase):
    metadata = naming_metadata(SCHEMA)


metadata = Base.metadata


class Experiment(Base):
    __tablename__ = "ab_test_experiments"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    organization: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str] = mapped_column(Text)
    control_model_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    treatment_model_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    traffic_split: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(Text)
    seed: Mapped[str] = mapped_column(Text)
    start_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    success_metrics: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    guardrails: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    min_sample_size: Mapped[int] = mapped_column(Integer, server_default="0")
    sequential: Mapped[bool] = mapped_column(Boolean, server_default="true")
    results: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    winner: Mapped[str | None] = mapped_column(Text)
    status_reason: Mapped[str | None] = mapped_column(Text)
    deploy_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_ab_test_experiments_org_created", "organization", "created_at", "id"),
        # One live (running or paused) experiment per model name.
        Index("uq_ab_test_experiments_one_live", "organization", "model_name", unique=True,
              postgresql_where=text("status IN ('running', 'paused')")),
    )


class ModelVersion(Base):
    """A registered version as the registry's events described it."""

    __tablename__ = "model_versions"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    organization: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(Text)
    model_id: Mapped[str] = mapped_column(Text)
    serving: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text)
    # When the registry made the status change this row shows: deploys and rollbacks travel on
    # different topics, so an older change may arrive after a newer one and must not win.
    status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_model_versions_org_name", "organization", "name"),
    )


class Exposure(Base):
    """A unit's first exposure to an experiment (written in batches by the router and /assign)."""

    __tablename__ = "exposures"

    experiment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    unit: Mapped[str] = mapped_column(Text, primary_key=True)
    variant: Mapped[str] = mapped_column(Text)
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class VariantUnits(Base):
    """Distinct exposed units per variant, kept as exposures are inserted (the SRM check's input)."""

    __tablename__ = "variant_units"

    experiment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    variant: Mapped[str] = mapped_column(Text, primary_key=True)
    units: Mapped[int] = mapped_column(BigInteger, server_default="0")


class OutcomeStats(Base):
    """Running sufficient statistics of one metric in one variant."""

    __tablename__ = "outcome_stats"

    experiment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    variant: Mapped[str] = mapped_column(Text, primary_key=True)
    metric: Mapped[str] = mapped_column(Text, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total: Mapped[float] = mapped_column(Float, server_default="0")
    total_sq: Mapped[float] = mapped_column(Float, server_default="0")
    levels: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default="{0,0,0,0,0}")


class LatencyBucket(Base):
    """A variant's latencies as a mergeable sketch: counts per logarithmic bucket (domain.latency_bucket)."""

    __tablename__ = "latency_buckets"

    experiment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    variant: Mapped[str] = mapped_column(Text, primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, server_default="0")


class ServedResponse(Base):
    """Which experiment and variant served a response: feedback on it becomes that variant's outcome."""

    __tablename__ = "served_responses"

    response_id: Mapped[str] = mapped_column(Text, primary_key=True)
    organization: Mapped[str] = mapped_column(Text)
    experiment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    variant: Mapped[str] = mapped_column(Text)
    served_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    feedback_count: Mapped[int] = mapped_column(Integer, server_default="0")

    __table_args__ = (Index("ix_served_responses_served_at", "served_at"),)


outbox, outbox_pending = outbox_tables(Base.metadata)
processed_events = processed_events_table(Base.metadata)

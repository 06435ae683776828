"""The registry's tables, in its own schema `registry`.

One deployed version per name per organization is the database's rule, not only the code's: a
partial unique index on (organization, name) WHERE status = 'deployed'."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.consumer import processed_events_table
from shared.db import naming_metadata
from shared.outbox import outbox_tables

SCHEMA = "registry"


class Base(DeclarativeBase):
    metadata = naming_metadata(SCHEMA)


metadata = Base.metadata


class ModelVersion(Base):
    """One version of a named model (the spec's `model_registry`)."""

    __tablename__ = "model_registry"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    organization: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(Text)
    major: Mapped[int] = mapped_column(Integer)
    minor: Mapped[int] = mapped_column(Integer)
    patch: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str] = mapped_column(Text)  # the provider's model id
    base_model: Mapped[str] = mapped_column(Text)
    fine_tuning_job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    status: Mapped[str] = mapped_column(Text)
    performance_metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    deployment_config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    serving: Mapped[dict[str, Any]] = mapped_column(JSONB)
    description: Mapped[str | None] = mapped_column(Text)
    # Where the version came from, as the events said: the job and the export it trained on.
    lineage: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    registered_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deployed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("uq_model_registry_org_name_version", "organization", "name", "version", unique=True),
        Index("uq_model_registry_org_job", "organization", "fine_tuning_job_id", unique=True,
              postgresql_where=text("fine_tuning_job_id IS NOT NULL")),
        Index("uq_model_registry_one_deployed", "organization", "name", unique=True,
              postgresql_where=text("status = 'deployed'")),
        Index("ix_model_registry_org_created", "organization", "created_at", "id"),
    )


class StatusChange(Base):
    """Every status change of every version: the deployment history."""

    __tablename__ = "deployment_history"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    organization: Mapped[str] = mapped_column(Text)
    model_version_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    name: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)  # register, deploy, deprecate, rollback, archive
    from_status: Mapped[str | None] = mapped_column(Text)
    to_status: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    experiment_id: Mapped[str | None] = mapped_column(Text)
    forced: Mapped[bool] = mapped_column(Boolean, server_default="false")
    # On a row that made a version live: the version live before it, which a rollback returns to.
    previous_version_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_deployment_history_version", "model_version_id", "id"),
        Index("ix_deployment_history_org_name", "organization", "name", "id"),
    )


class DeployPolicy(Base):
    """An organization's evaluation gate for deploys."""

    __tablename__ = "deploy_policies"

    organization: Mapped[str] = mapped_column(Text, primary_key=True)
    require_evaluation: Mapped[bool] = mapped_column(Boolean, server_default="true")
    min_preference_accuracy: Mapped[float | None] = mapped_column(Float)
    min_reward_margin: Mapped[float | None] = mapped_column(Float)
    max_eval_loss: Mapped[float | None] = mapped_column(Float)
    min_token_accuracy: Mapped[float | None] = mapped_column(Float)
    max_leak_findings: Mapped[int | None] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


outbox, outbox_pending = outbox_tables(Base.metadata)
processed_events = processed_events_table(Base.metadata)

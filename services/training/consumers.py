"""The training service's subscriptions: decode, call a handler, nothing else."""

from faststream.kafka import KafkaBroker

from services.training import handlers
from services.training.models import processed_events
from shared.consumer import IdempotentConsumer
from shared.db import Database
from shared.events import DatasetExported
from shared.settings import Settings


def register(db: Database, broker: KafkaBroker, settings: Settings) -> list[IdempotentConsumer]:
    return [
        IdempotentConsumer(
            db,
            broker,
            processed_events,
            service=handlers.SERVICE,
            topic=DatasetExported.topic(),
            handler=handlers.record_exported_datasets,
            max_records=50,  # an auto-train launch reads the dataset file: keep batches small
            max_retries=settings.rlhf_consumer_max_retries,
            retry_backoff=settings.rlhf_consumer_retry_backoff,
            session_timeout_ms=settings.rlhf_consumer_session_timeout_ms,
            heartbeat_interval_ms=settings.rlhf_consumer_heartbeat_interval_ms,
        )
    ]

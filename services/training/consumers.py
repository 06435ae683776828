"""The training service's subscriptions: decode, call a handler, nothing else."""

from faststream.kafka import KafkaBroker

from services.training import handlers
from services.training.models import processed_events
from shared.consumer import IdempotentConsumer, consumer_options
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
            # an auto-train launch reads the dataset file: keep batches small
            **consumer_options(settings, max_records=50),
        )
    ]

"""The feedback service's subscriptions: decode, call a handler, nothing else."""

from faststream.kafka import KafkaBroker

from services.feedback import handlers
from services.feedback.models import processed_events
from shared.consumer import IdempotentConsumer, consumer_options
from shared.db import Database
from shared.events import FeedbackSubmitted
from shared.settings import Settings


def register(db: Database, broker: KafkaBroker, settings: Settings) -> list[IdempotentConsumer]:
    return [
        IdempotentConsumer(
            db,
            broker,
            processed_events,
            service=handlers.SERVICE,
            topic=FeedbackSubmitted.topic(),
            handler=handlers.store_submitted_feedback,
            **consumer_options(settings),
        )
    ]


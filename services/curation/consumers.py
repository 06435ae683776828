"""The curation service's subscriptions: decode, call a handler, nothing else."""

from faststream.kafka import KafkaBroker

from services.curation import handlers
from services.curation.models import processed_events
from shared.consumer import IdempotentConsumer, consumer_options
from shared.db import Database
from shared.events import FeedbackReceived, FeedbackReviewed
from shared.settings import Settings


def register(db: Database, broker: KafkaBroker, settings: Settings) -> list[IdempotentConsumer]:
    subscriptions = [
        (FeedbackReceived.topic(), handlers.project_received_feedback),
        (FeedbackReviewed.topic(), handlers.project_reviewed_feedback),
    ]
    return [
        IdempotentConsumer(
            db, broker, processed_events, service=handlers.SERVICE, topic=topic, handler=handler,
            **consumer_options(settings),
        )
        for topic, handler in subscriptions
    ]


"""The curation service's subscriptions: decode, call a handler, nothing else."""

from faststream.kafka import KafkaBroker

from services.curation import handlers
from services.curation.models import processed_events
from shared.consumer import IdempotentConsumer
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


def consumer_options(settings: Settings) -> dict:
    return dict(
        max_records=settings.rlhf_consumer_max_records,
        max_retries=settings.rlhf_consumer_max_retries,
        retry_backoff=settings.rlhf_consumer_retry_backoff,
        session_timeout_ms=settings.rlhf_consumer_session_timeout_ms,
        heartbeat_interval_ms=settings.rlhf_consumer_heartbeat_interval_ms,
    )

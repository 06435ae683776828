"""The feedback service's subscriptions: decode, call a handler, nothing else."""

from faststream.kafka import KafkaBroker

from services.feedback import handlers
from services.feedback.models import processed_events
from shared.consumer import IdempotentConsumer
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


def consumer_options(settings: Settings) -> dict:
    return dict(
        max_records=settings.rlhf_consumer_max_records,
        max_retries=settings.rlhf_consumer_max_retries,
        retry_backoff=settings.rlhf_consumer_retry_backoff,
        session_timeout_ms=settings.rlhf_consumer_session_timeout_ms,
        heartbeat_interval_ms=settings.rlhf_consumer_heartbeat_interval_ms,
    )

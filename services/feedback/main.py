"""Wires the feedback service: its tables, routes, subscriptions and events.

    python -m services.feedback.main [--role api|consumer|relay ...]
"""

from pathlib import Path

from services.feedback import api, handlers, retention
from services.feedback.models import Base
from shared import service
from shared.events import FeedbackReceived, FeedbackReviewed, FeedbackSubmitted, ResponseServed
from shared.settings import get_settings

SPEC = service.ServiceSpec(
    name="feedback",
    port=8001,
    metadata=Base.metadata,
    migrations=Path(__file__).parent / "migrations",
    routers=[api.router],
    subscriptions={FeedbackSubmitted: handlers.store_submitted_feedback,
                   ResponseServed: handlers.keep_served_responses},
    produces=[FeedbackReceived, FeedbackReviewed],
    large_body_paths={"/api/feedback/batch": get_settings().rlhf_max_batch_body_bytes},
    background=[retention.prune_served_responses],
    relay_process=True,
    consumer_processes=2,
)

if __name__ == "__main__":
    service.main(SPEC)

"""Wires the feedback service: its tables, routes, subscriptions and topics.

    python -m services.feedback.main [--role api|consumer|relay ...]
"""

from pathlib import Path

from services.feedback import api, consumers
from services.feedback.models import SCHEMA
from shared import service
from shared.events import FeedbackReceived, FeedbackReviewed, FeedbackSubmitted
from shared.settings import get_settings

SPEC = service.ServiceSpec(
    name="feedback",
    schema=SCHEMA,
    migrations=Path(__file__).parent / "migrations",
    install_api=api.install,
    register_consumers=consumers.register,
    consumes=[FeedbackSubmitted.topic()],
    produces=[FeedbackReceived.topic(), FeedbackReviewed.topic()],
    large_body_paths={"/api/feedback/batch": get_settings().rlhf_max_batch_body_bytes},
    default_port=8001,
)

if __name__ == "__main__":
    service.main(SPEC)

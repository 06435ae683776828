"""Wires the curation service: its tables, routes, subscriptions and topics.

    python -m services.curation.main [--role api|consumer|relay ...]
"""

from pathlib import Path

from services.curation import api, consumers
from services.curation.models import SCHEMA
from shared import service
from shared.events import DatasetExported, FeedbackReceived, FeedbackReviewed

SPEC = service.ServiceSpec(
    name="curation",
    schema=SCHEMA,
    migrations=Path(__file__).parent / "migrations",
    install_api=api.install,
    register_consumers=consumers.register,
    consumes=[FeedbackReceived.topic(), FeedbackReviewed.topic()],
    produces=[DatasetExported.topic()],
    default_port=8002,
)

if __name__ == "__main__":
    service.main(SPEC)

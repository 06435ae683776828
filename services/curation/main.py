"""Wires the curation service: its tables, routes, subscriptions and events.

    python -m services.curation.main [--role api|consumer|relay ...]
"""

from pathlib import Path

from services.curation import api, handlers
from services.curation.models import Base
from shared import service
from shared.events import DatasetExported, FeedbackReceived, FeedbackReviewed

SPEC = service.ServiceSpec(
    name="curation",
    port=8002,
    metadata=Base.metadata,
    migrations=Path(__file__).parent / "migrations",
    routers=[api.datasets, api.pairs],
    subscriptions={
        FeedbackReceived: handlers.project_received_feedback,
        FeedbackReviewed: handlers.project_reviewed_feedback,
    },
    produces=[DatasetExported],
    consumer_processes=2,
)

if __name__ == "__main__":
    service.main(SPEC)

"""Wires the experiments service: its tables, routes (/api/experiments and the OpenAI-compatible
/v1), subscriptions and events.

    python -m services.experiments.main [--role api|consumer|relay ...]
"""

from pathlib import Path

from services.experiments import api, chat, handlers, models, retention
from shared import service
from shared.events import (
    DeploymentRequested,
    ExperimentConcluded,
    ExperimentPaused,
    ExperimentStarted,
    FeedbackReceived,
    ModelArchived,
    ModelDeployed,
    ModelRegistered,
    ModelRolledBack,
    OutcomeRecorded,
    ResponseServed,
)

SPEC = service.ServiceSpec(
    name="experiments",
    port=8005,
    metadata=models.metadata,
    migrations=Path(__file__).parent / "migrations",
    routers=[api.router, api.ab_test_router, chat.router],
    subscriptions={
        ModelRegistered: handlers.record_registered,
        ModelDeployed: handlers.record_deployed,
        ModelRolledBack: handlers.record_rolled_back,
        ModelArchived: handlers.record_archived,
        FeedbackReceived: handlers.record_feedback_outcomes,
        OutcomeRecorded: handlers.record_reported_outcomes,
    },
    produces=[ExperimentStarted, ExperimentPaused, ExperimentConcluded, ResponseServed, DeploymentRequested],
    background=[retention.prune_served_responses],
)

if __name__ == "__main__":
    service.main(SPEC)

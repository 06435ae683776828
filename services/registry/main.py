"""Wires the model registry: its tables, routes, subscriptions and events.

    python -m services.registry.main [--role api|consumer|relay ...]
"""

from pathlib import Path

from services.registry import api, handlers, models
from shared import service
from shared.events import (
    DeploymentRefused,
    DeploymentRequested,
    JobCompleted,
    ModelArchived,
    ModelDeployed,
    ModelRegistered,
    ModelRolledBack,
)

SPEC = service.ServiceSpec(
    name="registry",
    port=8004,
    metadata=models.metadata,
    migrations=Path(__file__).parent / "migrations",
    routers=[api.router],
    subscriptions={JobCompleted: handlers.register_completed_job, DeploymentRequested: handlers.deploy_requested},
    produces=[ModelRegistered, ModelDeployed, ModelRolledBack, ModelArchived, DeploymentRefused],
)

if __name__ == "__main__":
    service.main(SPEC)

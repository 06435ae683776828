"""Wires the training service: its tables, routes, subscriptions, topics and job monitor.

    python -m services.training.main [--role api|consumer|relay|background ...]
"""

from pathlib import Path

from services.training import api, consumers, monitor
from services.training.models import SCHEMA
from shared import service
from shared.events import DatasetExported, JobCompleted, JobFailed, JobProgressed, JobStarted

SPEC = service.ServiceSpec(
    name="training",
    schema=SCHEMA,
    migrations=Path(__file__).parent / "migrations",
    install_api=api.install,
    register_consumers=consumers.register,
    consumes=[DatasetExported.topic()],
    produces=[JobStarted.topic(), JobProgressed.topic(), JobCompleted.topic(), JobFailed.topic()],
    default_port=8003,
    background=[monitor.run_monitor],
)

if __name__ == "__main__":
    service.main(SPEC)

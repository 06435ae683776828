"""Wires the training service: its tables, routes, subscriptions, events and job monitor.

    python -m services.training.main [--role api|consumer|relay|background ...]
"""

from pathlib import Path

from services.training import api, handlers, monitor
from services.training.models import Base
from shared import service
from shared.events import DatasetExported, JobCompleted, JobFailed, JobProgressed, JobStarted

SPEC = service.ServiceSpec(
    name="training",
    port=8003,
    metadata=Base.metadata,
    migrations=Path(__file__).parent / "migrations",
    routers=[api.router],
    # an auto-train launch reads the dataset file: keep batches small
    subscriptions={DatasetExported: service.Subscription(handlers.record_exported_datasets, max_records=50)},
    produces=[JobStarted, JobProgressed, JobCompleted, JobFailed],
    background=[monitor.run_monitor],
)

if __name__ == "__main__":
    service.main(SPEC)

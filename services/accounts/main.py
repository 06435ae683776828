"""Wires the accounts service: the API keys' lifecycle (/api/keys) over the identity schema.

    python -m services.accounts.main [--role api|relay ...]
"""

from pathlib import Path

from services.accounts import api, models
from shared import auth, service
from shared.events import KeyCreated, KeyRevoked

SPEC = service.ServiceSpec(
    name="accounts",
    port=8006,
    metadata=models.metadata,
    # The identity schema's revisions, which every service also applies at start-up (shared/service.py).
    migrations=Path(auth.__file__).parent / "auth_migrations",
    routers=[api.router],
    produces=[KeyCreated, KeyRevoked],
)

if __name__ == "__main__":
    service.main(SPEC)

"""The product's services, in start order. Adding a service is its folder (with a `main.py`
defining SPEC, see shared/service.py) and one line here."""

SERVICES = (
    "services.feedback.main",
    "services.curation.main",
    "services.training.main",
    "services.registry.main",
    "services.experiments.main",
    "services.accounts.main",
)

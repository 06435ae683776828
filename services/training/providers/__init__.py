"""The provider registry: a new provider is a new module with a PROVIDER, listed here."""

from services.training.domain import InvalidLaunch
from services.training.providers import bedrock, huggingface, openai
from services.training.providers.base import Provider

PROVIDERS: dict[str, Provider] = {p.name: p for p in (openai.PROVIDER, bedrock.PROVIDER, huggingface.PROVIDER)}


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise InvalidLaunch("provider", f"unknown provider {name!r}; choose one of {', '.join(PROVIDERS)}") from None

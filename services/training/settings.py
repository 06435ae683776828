"""The training service's own settings (pydantic-settings, from the environment).

Provider credentials are read where the provider is used, so that a missing one answers a clear
4xx at launch instead of failing a job later.
"""

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# US dollars per million trained tokens (tokens in the file x epochs), from the providers' price
# pages. Override with RLHF_TRAINING_PRICES='{"model": price, ...}' (merged over these).
DEFAULT_PRICES: dict[str, float] = {
    "gpt-4o-mini-2024-07-18": 3.00,
    "gpt-4o-2024-08-06": 25.00,
    "gpt-4.1-2025-04-14": 25.00,
    "gpt-4.1-mini-2025-04-14": 5.00,
    "gpt-4.1-nano-2025-04-14": 1.50,
    "gpt-3.5-turbo-0125": 8.00,
    "anthropic.claude-3-haiku-20240307-v1:0:200k": 4.00,
    "anthropic.claude-3-haiku-20240307-v1:0": 4.00,
}


class TrainingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    rlhf_data_dir: Path = Path(".rlhf")

    # OpenAI (or a compatible server).
    openai_api_key: str | None = None
    rlhf_openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("rlhf_openai_base_url", "openai_base_url")
    )
    rlhf_openai_max_retries: int = 4  # the SDK retries 408/409/429/5xx and connection errors with backoff

    # AWS Bedrock: boto3 finds credentials, region and endpoint the usual way (env, profile, role).
    rlhf_bedrock_role_arn: str | None = None
    rlhf_bedrock_bucket: str | None = None  # training data goes here, outputs under <bucket>/outputs/
    rlhf_aws_max_attempts: int = 5

    # Local training: where worker processes keep their job directories.
    rlhf_training_workdir: Path | None = None
    rlhf_training_max_local_workers: int = 1
    # The leak check of local runs: answers generated for this many training and validation
    # prompts; a verbatim span of a training answer this long (characters) is a finding.
    rlhf_training_leak_sample: int = 16
    rlhf_training_leak_min_chars: int = 50
    rlhf_training_leak_max_new_tokens: int = 96

    # The monitor loop.
    rlhf_training_poll_interval: float = 5.0
    rlhf_training_progress_interval: float = 30.0  # at most one JobProgressed per job per interval
    rlhf_training_max_submit_attempts: int = 8
    rlhf_training_monitor_concurrency: int = 4  # jobs polled at once by one monitor

    rlhf_training_prices: dict[str, float] = Field(default_factory=dict)

    def prices(self) -> dict[str, float]:
        return {**DEFAULT_PRICES, **self.rlhf_training_prices}

    def workdir(self) -> Path:
        return (self.rlhf_training_workdir or self.rlhf_data_dir / "training-jobs").resolve()


@lru_cache
def get_training_settings() -> TrainingSettings:
    return TrainingSettings()

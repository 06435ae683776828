"""The training service's own settings (pydantic-settings, from the environment).

Provider credentials are read where the provider is used, so that a missing one answers a clear
4xx at launch instead of failing a job later.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal

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

    # Local runs are priced by the machine time they take, so that budgets apply to them too: hours x
    # the hourly price (US dollars) of a CPU or a GPU machine. A launch is estimated at
    # RLHF_LOCAL_TOKENS_PER_HOUR trained tokens an hour on RLHF_LOCAL_DEVICE; a finished run costs the
    # hours it measured, at the price of the device it ran on.
    rlhf_local_cpu_hour_price: float = Field(default=0.50, ge=0)
    rlhf_local_gpu_hour_price: float = Field(default=2.50, ge=0)
    rlhf_local_device: Literal["cpu", "gpu"] = "cpu"
    rlhf_local_tokens_per_hour: float = Field(default=2_000_000, gt=0)

    def prices(self) -> dict[str, float]:
        return {**DEFAULT_PRICES, **self.rlhf_training_prices}

    def local_hour_price(self, device: str) -> float:
        return self.rlhf_local_gpu_hour_price if device == "gpu" else self.rlhf_local_cpu_hour_price

    def local_price_per_million(self) -> float:
        """What a million trained tokens cost locally, at the estimated pace on RLHF_LOCAL_DEVICE."""
        return self.local_hour_price(self.rlhf_local_device) * 1_000_000 / self.rlhf_local_tokens_per_hour

    def workdir(self) -> Path:
        return (self.rlhf_training_workdir or self.rlhf_data_dir / "training-jobs").resolve()


@lru_cache
def get_training_settings() -> TrainingSettings:
    return TrainingSettings()

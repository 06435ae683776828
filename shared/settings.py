"""Settings every process reads from its environment (pydantic-settings).

With no DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS set, `rlhf up` and the tests start the embedded
PostgreSQL and Tansu broker themselves and pass their addresses down through these variables.
"""

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    database_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    rlhf_data_dir: Path = Path(".rlhf")

    rlhf_http_host: str = "127.0.0.1"
    rlhf_http_port: int | None = None  # unset: the service's own default port
    rlhf_log_format: str = Field(default="console", pattern="^(console|json)$")
    rlhf_log_level: str = "INFO"

    # The delivery backbone.
    rlhf_outbox_batch_size: int = 1000
    rlhf_outbox_poll_interval: float = 0.05
    rlhf_outbox_retention_hours: float = 24.0
    # Set by `rlhf up` when it starts the embedded broker, which keeps topics in memory: each relay
    # publishes its retained outbox again when it finds the broker fresh (see shared/outbox.py).
    rlhf_outbox_replay_on_fresh_broker: bool = False
    rlhf_consumer_max_records: int = 1000
    rlhf_consumer_session_timeout_ms: int = 10_000
    rlhf_consumer_heartbeat_interval_ms: int = 3_000
    # How long the broker may hold a fetch that finds nothing new. Tansu answers an empty fetch only
    # when this wait is over, even once records arrive, so it is the consumer's latency floor
    # (produce -> consume p50 130 ms at Kafka's default 500 ms, 26 ms at 100, 7.5 ms at 20, measured).
    rlhf_consumer_fetch_max_wait_ms: int = 50
    rlhf_consumer_max_retries: int = 5
    rlhf_consumer_retry_backoff: float = 0.2

    # HTTP limits: bodies past these answer 413 before they are parsed.
    rlhf_max_body_bytes: int = 1_048_576
    rlhf_max_batch_body_bytes: int = 16_777_216

    # Key lookups are cached briefly so that a request does not cost an extra query.
    rlhf_auth_cache_seconds: float = 30.0

    # Object store for exported datasets and trained adapters: a directory, file:// or s3://bucket/prefix.
    # Unset: <RLHF_DATA_DIR>/objects.
    rlhf_object_store_url: str | None = None

    def object_store_url(self) -> str:
        return self.rlhf_object_store_url or (self.rlhf_data_dir.resolve() / "objects").as_uri()

    # Base models of local training and serving: directories under this one, named relative to it (or
    # Hugging Face model ids already in this machine's Hugging Face cache). Unset: <RLHF_DATA_DIR>/models.
    rlhf_models_dir: Path | None = None

    def models_dir(self) -> Path:
        return (self.rlhf_models_dir or self.rlhf_data_dir / "models").resolve()

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("DATABASE_URL is not set (run through `rlhf up`, or set it)")
        return self.database_url

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set (run through `rlhf up`, or set it)")
        return self.kafka_bootstrap_servers


@lru_cache
def get_settings() -> Settings:
    return Settings()

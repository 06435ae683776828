"""OpenAI fine-tuning through the official SDK: upload the files, create the job with `method`
supervised or dpo, then poll the job, its events (metrics) and checkpoints, or cancel it.

Every job we create carries our job id in its metadata, and submit first looks for a job with
that metadata (the list endpoint's metadata filter): a crash between OpenAI accepting the job and
our storing its id does not start a second, billed job when the monitor tries again.

The SDK retries rate limits, 5xx and connection errors with backoff (max_retries); what is still
failing after that is reported as a transient ProviderError, so the monitor tries again later.
"""

import asyncio
from typing import Any

import openai
from openai import AsyncOpenAI

from services.training import domain
from services.training.providers.base import (
    JobSpec,
    MetricPoint,
    ProviderError,
    Snapshot,
    Submission,
    check_range,
    reject_unknown,
)
from services.training.settings import TrainingSettings
from shared.objectstore import object_store_from_url
from shared.settings import get_settings

STATUS = {
    "validating_files": domain.VALIDATING,
    "queued": domain.QUEUED,
    "running": domain.TRAINING,
    "paused": domain.TRAINING,
    "succeeded": domain.COMPLETED,
    "failed": domain.FAILED,
    "cancelled": domain.CANCELLED,
}
HYPERPARAMETERS = {"n_epochs", "batch_size", "learning_rate_multiplier"}
DPO_HYPERPARAMETERS = HYPERPARAMETERS | {"beta"}
EVENT_PAGE = 100


def map_status(provider_status: str) -> str:
    return STATUS[provider_status]


class OpenAIProvider:
    name = "openai"
    local = False

    def models(self, settings: TrainingSettings) -> list[str]:
        return sorted(m for m in settings.prices() if m.startswith(("gpt-", "ft:")))

    def check_model(self, base_model: str, settings: TrainingSettings) -> None:
        if base_model not in self.models(settings):
            raise domain.InvalidLaunch(
                "base_model",
                f"openai cannot fine-tune {base_model!r}; choose one of {', '.join(self.models(settings))}",
            )

    def normalize_hyperparameters(self, method: str, given: dict[str, Any]) -> dict[str, Any]:
        reject_unknown(given, DPO_HYPERPARAMETERS if method == "dpo" else HYPERPARAMETERS, f"openai {method}")
        check_range(given, "n_epochs", 1, 50, integer=True)
        check_range(given, "batch_size", 1, 256, integer=True)
        check_range(given, "learning_rate_multiplier", 0, 1e6, integer=False, low_open=True)
        check_range(given, "beta", 0, 2, integer=False, low_open=True)
        return {k: v for k, v in given.items() if v is not None}

    def epochs(self, hyperparameters: dict[str, Any], examples: int) -> int:
        n = hyperparameters.get("n_epochs", "auto")
        return domain.openai_auto_epochs(examples) if n == "auto" else int(n)

    def check_credentials(self, settings: TrainingSettings) -> None:
        if not settings.openai_api_key:
            raise domain.MissingCredentials("openai is not configured here: set OPENAI_API_KEY")

    def client(self, settings: TrainingSettings) -> AsyncOpenAI:
        return AsyncOpenAI(
            api_key=settings.openai_api_key,
            base_url=settings.rlhf_openai_base_url,
            max_retries=settings.rlhf_openai_max_retries,
        )

    async def submit(self, job: JobSpec, settings: TrainingSettings) -> Submission:
        async with self.client(settings) as client, _translated():
            started = await _job_started_for(client, job.job_id)
            if started is not None:  # an earlier attempt got through, then we crashed before storing its id
                return Submission(started.id, started.status, map_status(started.status))
            training_file = await _upload(client, job.training_url, f"{job.job_id}-train.jsonl")
            extra: dict[str, Any] = {}
            if job.validation_url:
                extra["validation_file"] = await _upload(client, job.validation_url, f"{job.job_id}-validation.jsonl")
            if job.suffix:
                extra["suffix"] = job.suffix
            method_type = "dpo" if job.method == "dpo" else "supervised"
            created = await client.fine_tuning.jobs.create(
                model=job.base_model,
                training_file=training_file,
                method={"type": method_type, method_type: {"hyperparameters": job.hyperparameters}},
                metadata={"rlhf_job_id": job.job_id, "organization": job.organization[:512]},
                **extra,
            )
        return Submission(created.id, created.status, map_status(created.status))

    async def poll(self, provider_job_id: str, cursor: dict[str, Any], settings: TrainingSettings) -> Snapshot:
        async with self.client(settings) as client, _translated():
            job = await client.fine_tuning.jobs.retrieve(provider_job_id)
            events = await _new_events(client, provider_job_id, cursor.get("last_event_id"))
            checkpoints = await _new_checkpoints(client, provider_job_id, set(cursor.get("checkpoints", [])))
        snapshot = Snapshot(provider_status=job.status, status=map_status(job.status), cursor=dict(cursor))
        for event in events:
            _read_event(event, snapshot)
        for checkpoint in checkpoints:
            snapshot.messages.append(
                f"checkpoint {checkpoint.fine_tuned_model_checkpoint} at step {checkpoint.step_number}"
            )
        if events:
            snapshot.cursor["last_event_id"] = events[-1].id
        if checkpoints:
            snapshot.cursor["checkpoints"] = [*cursor.get("checkpoints", []), *(c.id for c in checkpoints)]
        snapshot.trained_tokens = job.trained_tokens
        snapshot.resulting_model_id = job.fine_tuned_model
        if job.error and job.error.message:
            snapshot.error = job.error.message
        return snapshot

    async def cancel(self, provider_job_id: str, settings: TrainingSettings) -> None:
        async with self.client(settings) as client, _translated():
            await client.fine_tuning.jobs.cancel(provider_job_id)


def _read_event(event, snapshot: Snapshot) -> None:
    data = event.data if isinstance(getattr(event, "data", None), dict) else {}
    if getattr(event, "type", None) == "metrics" and "step" in data:
        values = {k: float(v) for k, v in data.items()
                  if isinstance(v, int | float) and k not in ("step", "total_steps")}
        if "train_loss" in values:
            values["loss"] = values["train_loss"]
        snapshot.points.append(MetricPoint(step=int(data["step"]), values=values))
        if data.get("total_steps"):
            snapshot.total_steps = int(data["total_steps"])
    else:
        snapshot.messages.append(f"[{event.level}] {event.message}")


async def _job_started_for(client: AsyncOpenAI, rlhf_job_id: str):
    """The OpenAI job an earlier submit of ours created for this job, found by its metadata."""
    page = await client.fine_tuning.jobs.list(metadata={"rlhf_job_id": rlhf_job_id}, limit=10)
    ours = [j for j in page.data if (j.metadata or {}).get("rlhf_job_id") == rlhf_job_id]
    return min(ours, key=lambda j: j.created_at, default=None)


async def _upload(client: AsyncOpenAI, url: str, filename: str) -> str:
    content = await asyncio.to_thread(_read_object, url)
    uploaded = await client.files.create(file=(filename, content, "application/jsonl"), purpose="fine-tune")
    return uploaded.id


def _read_object(url: str) -> bytes:
    with object_store_from_url(get_settings().object_store_url()).open(url) as src:
        return src.read()


async def _new_events(client: AsyncOpenAI, job_id: str, last_seen: str | None) -> list:
    """Events after `last_seen`, oldest first. The API lists newest first and pages backwards."""
    fresh: list = []
    after: str | None = None
    while True:
        kwargs = {"limit": EVENT_PAGE, **({"after": after} if after else {})}
        page = await client.fine_tuning.jobs.list_events(job_id, **kwargs)
        for event in page.data:
            if event.id == last_seen:
                return list(reversed(fresh))
            fresh.append(event)
        if not page.has_more or not page.data:
            return list(reversed(fresh))
        after = page.data[-1].id


async def _new_checkpoints(client: AsyncOpenAI, job_id: str, seen: set[str]) -> list:
    page = await client.fine_tuning.jobs.checkpoints.list(job_id, limit=100)
    return sorted((c for c in page.data if c.id not in seen), key=lambda c: c.step_number)


class _translated:
    """SDK errors as ProviderError: transient when the SDK's own retries ran out on a retryable one."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        if exc is None or not isinstance(exc, openai.OpenAIError):
            return False
        if isinstance(exc, openai.APIConnectionError | openai.RateLimitError | openai.InternalServerError):
            raise ProviderError(f"openai unavailable: {exc}", transient=True) from exc
        if isinstance(exc, openai.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            message = body.get("message") or (body.get("error") or {}).get("message") or str(exc)
            raise ProviderError(
                f"openai refused ({exc.status_code}): {message}", transient=exc.status_code >= 500
            ) from exc
        raise ProviderError(f"openai: {exc}") from exc


PROVIDER = OpenAIProvider()

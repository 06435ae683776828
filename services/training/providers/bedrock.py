"""Anthropic Claude on AWS Bedrock through boto3: upload the files to S3, create a model
customization job with the Claude 3 hyperparameters, poll it, stop it.

Bedrock reports a job's loss curve as `step_wise_training_metrics.csv` (step_number,
epoch_number, training_loss, perplexity) under the job's output folder in S3; the poller reads
the rows it has not seen yet. With a validation file, it also writes `validation_metrics.csv`
(step_number, epoch_number, validation_loss, perplexity); its last validation loss is the job's
evaluation. boto3 retries throttling and 5xx itself (standard retry mode).
"""

import asyncio
import csv
import io
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

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
    "InProgress": domain.TRAINING,
    "Completed": domain.COMPLETED,
    "Failed": domain.FAILED,
    "Stopping": domain.CANCELLED,
    "Stopped": domain.CANCELLED,
}
MODELS = ("anthropic.claude-3-haiku-20240307-v1:0:200k", "anthropic.claude-3-haiku-20240307-v1:0")
# Claude 3 customization hyperparameters and their documented ranges (AWS Bedrock user guide).
RANGES: dict[str, tuple[float, float, bool]] = {
    "epochCount": (1, 10, True),
    "batchSize": (4, 256, True),
    "learningRateMultiplier": (0.1, 2, False),
    "earlyStoppingThreshold": (0, 0.1, False),
    "earlyStoppingPatience": (1, 10, True),
}
DEFAULT_EPOCHS = 2
TRANSIENT_CODES = {"ThrottlingException", "ServiceUnavailableException", "InternalServerException",
                   "TooManyRequestsException", "RequestTimeout"}


def map_status(provider_status: str) -> str:
    return STATUS[provider_status]


class BedrockProvider:
    name = "bedrock"
    local = False

    def models(self, settings: TrainingSettings) -> list[str]:
        return list(MODELS)

    def check_model(self, base_model: str, settings: TrainingSettings) -> None:
        if base_model not in MODELS:
            raise domain.InvalidLaunch(
                "base_model", f"bedrock fine-tuning here supports {', '.join(MODELS)}; not {base_model!r}"
            )

    def normalize_hyperparameters(self, method: str, given: dict[str, Any]) -> dict[str, Any]:
        reject_unknown(given, set(RANGES), "bedrock (Claude 3)")
        for name, (low, high, integer) in RANGES.items():
            check_range(given, name, low, high, integer=integer)
        return {k: v for k, v in given.items() if v is not None}

    def epochs(self, hyperparameters: dict[str, Any], examples: int) -> int:
        return int(hyperparameters.get("epochCount", DEFAULT_EPOCHS))

    def check_credentials(self, settings: TrainingSettings) -> None:
        missing = [name for name, value in (("RLHF_BEDROCK_ROLE_ARN", settings.rlhf_bedrock_role_arn),
                                            ("RLHF_BEDROCK_BUCKET", settings.rlhf_bedrock_bucket)) if not value]
        if boto3.Session().get_credentials() is None:
            missing.append("AWS credentials")
        if missing:
            raise domain.MissingCredentials(f"bedrock is not configured here: set {', '.join(missing)}")

    def _client(self, service: str, settings: TrainingSettings):
        config = Config(retries={"mode": "standard", "max_attempts": settings.rlhf_aws_max_attempts})
        return boto3.client(service, config=config)

    async def submit(self, job: JobSpec, settings: TrainingSettings) -> Submission:
        return await asyncio.to_thread(self._submit, job, settings)

    def _submit(self, job: JobSpec, settings: TrainingSettings) -> Submission:
        bucket = settings.rlhf_bedrock_bucket
        with _translated():
            s3 = self._client("s3", settings)
            training = _upload(s3, bucket, f"training-data/{job.job_id}/train.jsonl", job.training_url)
            request: dict[str, Any] = dict(
                jobName=f"rlhf-{job.job_id}",
                customModelName=f"rlhf-{job.suffix or 'model'}-{job.job_id[:8]}",
                roleArn=settings.rlhf_bedrock_role_arn,
                clientRequestToken=job.job_id,  # a retried create cannot start a second job
                baseModelIdentifier=job.base_model,
                customizationType="FINE_TUNING",
                trainingDataConfig={"s3Uri": training},
                outputDataConfig={"s3Uri": f"s3://{bucket}/outputs/{job.job_id}/"},
                hyperParameters={k: str(v) for k, v in job.hyperparameters.items()},
                jobTags=[{"key": "rlhf-organization", "value": job.organization[:256]}],
            )
            if job.validation_url:
                validation = _upload(s3, bucket, f"training-data/{job.job_id}/validation.jsonl", job.validation_url)
                request["validationDataConfig"] = {"validators": [{"s3Uri": validation}]}
            bedrock = self._client("bedrock", settings)
            bedrock.create_model_customization_job(**request)
            described = bedrock.get_model_customization_job(jobIdentifier=request["jobName"])
        return Submission(request["jobName"], described["status"], map_status(described["status"]))

    async def poll(self, provider_job_id: str, cursor: dict[str, Any], settings: TrainingSettings) -> Snapshot:
        return await asyncio.to_thread(self._poll, provider_job_id, cursor, settings)

    def _poll(self, provider_job_id: str, cursor: dict[str, Any], settings: TrainingSettings) -> Snapshot:
        with _translated():
            job = self._client("bedrock", settings).get_model_customization_job(jobIdentifier=provider_job_id)
            s3 = self._client("s3", settings)
            rows = _metric_rows(s3, job)
            validation = _csv_rows(s3, *validation_metrics_key(job)) if job["status"] == "Completed" else []
        status = job["status"]
        snapshot = Snapshot(provider_status=status, status=map_status(status), cursor=dict(cursor))
        last = cursor.get("last_step", -1)
        epochs = int(job.get("hyperParameters", {}).get("epochCount", DEFAULT_EPOCHS))
        for row in rows:
            step = int(row["step_number"])
            if step <= last:
                continue
            values = {k: float(v) for k, v in row.items()
                      if k not in ("step_number", "epoch_number") and v not in ("", None)}
            if "training_loss" in values:
                values["loss"] = values["training_loss"]
            epoch = float(row["epoch_number"]) if row.get("epoch_number") not in (None, "") else None
            snapshot.points.append(MetricPoint(step=step, values=values, epoch=epoch))
            snapshot.cursor["last_step"] = step
            snapshot.epoch = epoch
        if snapshot.epoch is not None and epochs:
            snapshot.cursor["epochs"] = epochs
        if status == "Completed":
            snapshot.resulting_model_id = job.get("outputModelArn")
            losses = [r["validation_loss"] for r in validation if r.get("validation_loss") not in ("", None)]
            if losses:
                snapshot.final_metrics["validation_loss"] = float(losses[-1])
        if status == "Failed":
            snapshot.error = job.get("failureMessage") or "bedrock reported the job failed"
        return snapshot

    async def cancel(self, provider_job_id: str, settings: TrainingSettings) -> None:
        def stop() -> None:
            with _translated():
                self._client("bedrock", settings).stop_model_customization_job(jobIdentifier=provider_job_id)

        await asyncio.to_thread(stop)


def _upload(s3, bucket: str, key: str, url: str) -> str:
    with object_store_from_url(get_settings().object_store_url()).open(url) as src:
        s3.upload_fileobj(src, bucket, key)
    return f"s3://{bucket}/{key}"


def _output_folder(job: dict[str, Any]) -> tuple[str, str]:
    output = job["outputDataConfig"]["s3Uri"].removeprefix("s3://")
    bucket, _, prefix = output.partition("/")
    job_id = job["jobArn"].rsplit("/", 1)[-1]
    prefix = prefix.rstrip("/")
    return bucket, f"{prefix}/model-customization-job-{job_id}" if prefix else f"model-customization-job-{job_id}"


def metrics_key(job: dict[str, Any]) -> tuple[str, str]:
    """Where Bedrock writes the job's step-wise training metrics: (bucket, key)."""
    bucket, folder = _output_folder(job)
    return bucket, f"{folder}/training_artifacts/step_wise_training_metrics.csv"


def validation_metrics_key(job: dict[str, Any]) -> tuple[str, str]:
    """Where Bedrock writes the job's validation metrics: (bucket, key)."""
    bucket, folder = _output_folder(job)
    return bucket, f"{folder}/validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv"


def _metric_rows(s3, job: dict[str, Any]) -> list[dict[str, str]]:
    return _csv_rows(s3, *metrics_key(job))


def _csv_rows(s3, bucket: str, key: str) -> list[dict[str, str]]:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "AccessDenied"):
            return []  # not written yet: Bedrock writes the file as training goes
        raise
    return list(csv.DictReader(io.StringIO(body)))


class _translated:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None:
            return False
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            transient = code in TRANSIENT_CODES or status >= 500
            raise ProviderError(f"bedrock refused ({code}): {error.get('Message', exc)}", transient=transient) from exc
        if isinstance(exc, NoCredentialsError):
            raise ProviderError(f"bedrock: {exc}") from exc
        if isinstance(exc, BotoCoreError):
            raise ProviderError(f"bedrock unreachable: {exc}", transient=True) from exc
        return False


PROVIDER = BedrockProvider()

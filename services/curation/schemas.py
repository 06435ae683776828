"""HTTP shapes of the curation service. Requests forbid unknown fields: no mass assignment."""

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.curation.domain import STRATEGIES
from shared.downloads import export_file_url, export_links
from shared.input_guard import StorableDatetime

DatasetType = Literal["preference_pairs", "instruction_tuning", "dpo"]
Status = Literal["draft", "curating", "ready", "exported", "archived"]
Strategy = Literal["correction", "thumbs", "rating"]
Format = Literal["openai_sft", "openai_dpo", "anthropic", "bedrock_claude", "trl_dpo", "parquet", "jsonl"]
MAX_IDS = 10_000
Text = Field(min_length=1, max_length=100_000)


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoTrain(Request):
    """When set, the training service launches a job by itself on each export."""

    provider: str = Field(min_length=1, max_length=50)
    base_model: str = Field(min_length=1, max_length=200)
    method: Literal["sft", "dpo"]
    hyperparameters: dict[str, Any] = Field(default_factory=dict)


class DatasetCreate(Request):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    dataset_type: DatasetType
    feedback_ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_IDS)
    system_prompt: str | None = Field(default=None, max_length=20_000)
    validation_ratio: float = Field(default=0.1, ge=0, lt=1)
    split_seed: int = Field(default=0, ge=0, le=2**31 - 1)
    export_format: Format | None = None
    auto_train: AutoTrain | None = None
    curator_email: str | None = Field(default=None, max_length=320)


class DatasetPatch(Request):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    status: Status | None = None
    feedback_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_IDS)
    add_feedback_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_IDS)
    remove_feedback_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_IDS)
    system_prompt: str | None = Field(default=None, max_length=20_000)
    validation_ratio: float | None = Field(default=None, ge=0, lt=1)
    split_seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    export_format: Format | None = None
    auto_train: AutoTrain | None = None

    @model_validator(mode="after")
    def _not_empty(self):
        if not self.model_fields_set:
            raise ValueError("name at least one field to change")
        return self


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    organization: str
    name: str
    description: str | None
    dataset_type: DatasetType
    status: Status
    feedback_ids: list[uuid.UUID]
    sample_count: int
    quality_score: float | None
    validation_report: dict[str, Any] | None
    export_format: Format | None
    export_url: str | None = Field(description="the current export's training file, downloaded through the API")
    export_version: int
    system_prompt: str | None
    validation_ratio: float
    split_seed: int
    auto_train: dict[str, Any] | None
    content_version: int
    curator_email: str | None
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="after")
    def _download_url(self):
        """The stored export_url is where the file lies in the object store; a client gets the API's URL."""
        if self.export_url is not None:
            self.export_url = export_file_url(self.id, self.export_version, "train")
        return self


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    next_cursor: str | None


class PairFields(Request):
    query: str = Text
    chosen_response: str = Text
    rejected_response: str = Text
    preference_strength: float = Field(default=1.0, ge=0, le=1)
    context_documents: list[Any] = Field(default_factory=list, max_length=100)
    annotator_email: str | None = Field(default=None, max_length=320)
    annotation_notes: str | None = Field(default=None, max_length=10_000)


class PairCreate(PairFields):
    dataset_id: uuid.UUID
    source_feedback_ids: list[uuid.UUID] = Field(default_factory=list, max_length=100)


class PairPatch(Request):
    query: str | None = Field(default=None, min_length=1, max_length=100_000)
    chosen_response: str | None = Field(default=None, min_length=1, max_length=100_000)
    rejected_response: str | None = Field(default=None, min_length=1, max_length=100_000)
    preference_strength: float | None = Field(default=None, ge=0, le=1)
    context_documents: list[Any] | None = Field(default=None, max_length=100)
    annotator_email: str | None = Field(default=None, max_length=320)
    annotation_notes: str | None = Field(default=None, max_length=10_000)

    @model_validator(mode="after")
    def _not_empty(self):
        if not self.model_fields_set:
            raise ValueError("name at least one field to change")
        return self


class PairOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    organization: str
    dataset_id: uuid.UUID
    query: str
    chosen_response: str
    rejected_response: str
    preference_strength: float
    context_documents: list[Any]
    annotator_email: str | None
    annotation_notes: str | None
    source_feedback_ids: list[uuid.UUID]
    strategy: Strategy | Literal["manual"]
    created_at: datetime
    updated_at: datetime


class PairPage(BaseModel):
    items: list[PairOut]
    next_cursor: str | None


class BulkCreate(Request):
    """Make pairs from the feedback curation has seen, by named strategies (see domain.STRATEGIES)."""

    dataset_id: uuid.UUID
    strategies: list[Strategy] = Field(min_length=1, max_length=len(STRATEGIES))
    feedback_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_IDS)
    tags: list[str] | None = Field(default=None, max_length=20)
    created_from: StorableDatetime | None = None
    created_to: StorableDatetime | None = None
    approved_only: bool = False
    max_pairs_per_query: int = Field(default=10, ge=1, le=1000)
    min_rating_gap: float = Field(default=1, gt=0, le=4)
    annotator_email: str | None = Field(default=None, max_length=320)
    dry_run: bool = Field(default=False, description="count the pairs each strategy would add now; write nothing "
                                                      "(answered 200)")


class BulkResult(BaseModel):
    dataset_id: uuid.UUID
    created: dict[str, int] = Field(description="new pairs per strategy (with dry_run: the pairs it would add)")
    sample_count: int
    dry_run: bool = False


class ValidateRequest(Request):
    format: Format | None = None


class ExportRequest(Request):
    format: Format  # and checked against the dataset type, 422 naming it
    validation_ratio: float | None = Field(default=None, ge=0, lt=1)
    split_seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


class ExportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    dataset_id: uuid.UUID
    version: int
    format: Format
    url: str = Field(description="the training file's download URL, through the API")
    sha256: str
    validation_url: str | None = Field(description="the validation file's download URL; null: no validation split")
    validation_sha256: str | None
    manifest_url: str = Field(description="the manifest's download URL")
    sources_url: str = Field(default="", description="sources.jsonl's download URL: each example's pair and feedback")
    counts: dict[str, int]
    masked: dict[str, int]
    content_version: int
    created_by: str | None
    created_at: datetime

    @model_validator(mode="after")
    def _download_urls(self):
        """Download URLs through the API, never where the files lie in the object store (file://, s3://)."""
        links = export_links(self.dataset_id, self.version, validation=self.validation_url is not None)
        self.url, self.validation_url = links["url"], links["validation_url"]
        self.manifest_url, self.sources_url = links["manifest_url"], links["sources_url"]
        return self

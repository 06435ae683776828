"""A local stand-in for OpenAI's files and fine-tuning endpoints, checked against OpenAI's own
OpenAPI description: every request it receives and every response it sends is validated with
openapi-core, and violations are kept in `violations` for the tests to assert on.

Jobs move one stage per retrieve: validating_files -> queued -> running (one training step per
retrieve, each a `metrics` event, a checkpoint per epoch) -> succeeded. Listing jobs honours the
`metadata[k]=v` filter and `after` cursor of the contract. A job whose suffix
contains "fail" fails while running; `fail_next_creates(n, status)` answers the next n job
creations with an error (429/5xx exercise the client's retries).
"""

import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from openapi_core import Config, OpenAPI
from openapi_core.contrib.starlette.requests import StarletteOpenAPIRequest
from openapi_core.contrib.starlette.responses import StarletteOpenAPIResponse

from shared.infra import free_port

DEFAULT_CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "openai-openapi.yaml"
STEPS_PER_EPOCH = 4


def contract_path() -> Path:
    return Path(os.environ.get("RLHF_OPENAI_CONTRACT") or DEFAULT_CONTRACT)


def _openapi_30_idioms_as_31(node: Any) -> Any:
    """The document says `openapi: 3.1.0` but keeps some 3.0 spellings: `exclusiveMinimum: true`
    next to `minimum` (in 3.1 a number, else every value <= 1 would fail), `nullable: true`, and
    `type: string, format: binary` for file parts. Read them as their authors meant them (a nullable
    parameter keeps its one type: see below)."""
    if isinstance(node, list):
        return [_openapi_30_idioms_as_31(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_30_idioms_as_31(v) for k, v in node.items()}
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(exclusive) is True and bound in out:
            out[exclusive] = out.pop(bound)
        elif out.get(exclusive) is False:
            out.pop(exclusive)
    if out.pop("nullable", False) is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("type") == "string" and out.get("format") == "binary":
        # A file part: 3.1 describes raw bytes by leaving out `type` (the format still checks it).
        out.pop("type")
    if "in" in out and isinstance(out.get("schema"), dict) and isinstance(out["schema"].get("type"), list):
        # A parameter: openapi-core picks its style deserializer by one `type`, and a query string
        # has no JSON null to carry (the list endpoint spells "no metadata" as the literal `metadata=null`).
        types = [t for t in out["schema"]["type"] if t != "null"]
        out["schema"] = {**out["schema"], "type": types[0]} if len(types) == 1 else out["schema"]
    return out


_SPEC_CACHE: dict[str, dict] = {}


def load_contract(base_url: str) -> OpenAPI:
    path = str(contract_path())
    if path not in _SPEC_CACHE:
        with open(path) as src:
            _SPEC_CACHE[path] = _openapi_30_idioms_as_31(yaml.load(src, Loader=yaml.CSafeLoader))
    spec = dict(_SPEC_CACHE[path], servers=[{"url": base_url}])
    # The published document does not pass the strict meta-schema check (duplicate `required`
    # entries elsewhere in it); request and response validation does not need that check.
    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))


async def checked_by_contract(contract, violations: list[str], request: Request, call_next, *,
                              refuse_invalid: bool) -> Response:
    """Checks a request and its answer against OpenAI's OpenAPI description; what does not fit is
    recorded in `violations` (and, with `refuse_invalid`, the request answered 400 as OpenAI would).
    Streamed answers (server-sent events) pass unchecked."""
    body = await request.body()
    try:
        contract.validate_request(StarletteOpenAPIRequest(request, body))
    except Exception as exc:  # the product sent something OpenAI would not accept
        message = f"request {request.method} {request.url.path}: {exc!r} {getattr(exc, '__cause__', '')}"
        violations.append(message)
        if refuse_invalid:
            return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                           "param": None, "code": None}}, status_code=400)
    response = await call_next(request)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return response
    data = b"".join([chunk async for chunk in response.body_iterator])
    plain = Response(content=data, status_code=response.status_code, headers=dict(response.headers))
    if response.status_code < 400:
        try:
            contract.validate_response(StarletteOpenAPIRequest(request, body), StarletteOpenAPIResponse(plain))
        except Exception as exc:
            violations.append(f"response {request.url.path}: {exc!r} {getattr(exc, '__cause__', '')}")
    return plain


@dataclass
class FakeJob:
    id: str
    model: str
    training_file: str
    validation_file: str | None
    method: dict[str, Any]
    suffix: str | None
    metadata: dict[str, str] | None
    created_at: int
    n_epochs: int
    status: str = "validating_files"
    step: int = 0
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.n_epochs * STEPS_PER_EPOCH


class OpenAIFake:
    def __init__(self):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.contract = load_contract(self.base_url)
        self.violations: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.create_requests: list[dict[str, Any]] = []  # bodies of POST /fine_tuning/jobs that got past faults
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, FakeJob] = {}
        self._ids = itertools.count(1)
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------
    def fail_next_creates(self, n: int, status: int) -> None:
        self._failures.extend([status] * n)

    def job_for(self, rlhf_job_id: str) -> FakeJob | None:
        return next(iter(self.jobs_for(rlhf_job_id)), None)

    def jobs_for(self, rlhf_job_id: str) -> list[FakeJob]:
        """Every fine-tuning job created for one of our jobs (more than one would be a double bill)."""
        return [j for j in self.jobs.values() if (j.metadata or {}).get("rlhf_job_id") == rlhf_job_id]

    def creates_for(self, rlhf_job_id: str) -> int:
        return sum(1 for b in self.create_requests if (b.get("metadata") or {}).get("rlhf_job_id") == rlhf_job_id)

    def start(self) -> "OpenAIFake":
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the OpenAI fake did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server:
            self._server.should_exit = True
            self._thread.join(10)

    # -- the API ---------------------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def validate(request: Request, call_next):
            self.requests.append((request.method, request.url.path))
            return await checked_by_contract(self.contract, self.violations, request, call_next, refuse_invalid=True)

        @app.post("/v1/files")
        async def create_file(request: Request):
            form = await request.form()
            upload = form["file"]
            content = await upload.read()
            file_id = self._new_id("file")
            self.files[file_id] = {
                "id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": upload.filename, "purpose": form["purpose"], "status": "processed",
                "content": content,
            }
            return {k: v for k, v in self.files[file_id].items() if k != "content"}

        @app.post("/v1/fine_tuning/jobs")
        async def create_job(request: Request):
            if self._failures:
                status = self._failures.pop(0)
                return JSONResponse({"error": {"message": f"injected {status}", "type": "server_error",
                                               "param": None, "code": None}}, status_code=status)
            body = await request.json()
            self.create_requests.append(body)
            if body["training_file"] not in self.files:
                return JSONResponse({"error": {"message": f"file {body['training_file']} not found",
                                               "type": "invalid_request_error", "param": "training_file",
                                               "code": None}}, status_code=400)
            method = body.get("method") or {"type": "supervised"}
            hp = (method.get(method["type"]) or {}).get("hyperparameters") or {}
            epochs = hp.get("n_epochs", "auto")
            job = FakeJob(
                id=self._new_id("ftjob"), model=body["model"], training_file=body["training_file"],
                validation_file=body.get("validation_file"), method=method, suffix=body.get("suffix"),
                metadata=body.get("metadata"), created_at=int(time.time()),
                n_epochs=3 if epochs == "auto" else int(epochs),
            )
            self.jobs[job.id] = job
            self._event(job, "info", "Validating training file", "message")
            return self._job_json(job)

        @app.get("/v1/fine_tuning/jobs")
        async def list_jobs(request: Request, after: str | None = None, limit: int = 20):
            wanted = _metadata_filter(request)
            newest_first = sorted(self.jobs.values(), key=lambda j: j.id, reverse=True)
            if after:
                newest_first = [j for j in newest_first if j.id < after]
            matching = [j for j in newest_first if _matches(j.metadata, wanted)]
            return {"object": "list", "data": [self._job_json(j) for j in matching[:limit]],
                    "has_more": len(matching) > limit}

        @app.get("/v1/fine_tuning/jobs/{job_id}")
        async def retrieve(job_id: str):
            job = self.jobs.get(job_id)
            if job is None:
                return _not_found(job_id)
            with self._lock:
                self._advance(job)
            return self._job_json(job)

        @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
        async def cancel(job_id: str):
            job = self.jobs.get(job_id)
            if job is None:
                return _not_found(job_id)
            if job.status in ("succeeded", "failed", "cancelled"):
                return JSONResponse({"error": {"message": f"Job has already {job.status}", "type":
                                               "invalid_request_error", "param": None, "code": None}}, status_code=400)
            job.status, job.finished_at = "cancelled", int(time.time())
            self._event(job, "info", "Fine-tuning job cancelled", "message")
            return self._job_json(job)

        @app.get("/v1/fine_tuning/jobs/{job_id}/events")
        async def events(job_id: str, after: str | None = None, limit: int = 20):
            job = self.jobs.get(job_id)
            if job is None:
                return _not_found(job_id)
            newest_first = list(reversed(job.events))
            if after:
                index = next((i for i, e in enumerate(newest_first) if e["id"] == after), len(newest_first))
                newest_first = newest_first[index + 1:]
            page = newest_first[:limit]
            return {"object": "list", "data": page, "has_more": len(newest_first) > limit}

        @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
        async def checkpoints(job_id: str, limit: int = 10):
            job = self.jobs.get(job_id)
            if job is None:
                return _not_found(job_id)
            data = list(reversed(job.checkpoints))[:limit]
            return {"object": "list", "data": data, "has_more": len(job.checkpoints) > limit,
                    "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

        return app

    def _advance(self, job: FakeJob) -> None:
        if job.status == "validating_files":
            job.status = "queued"
            self._event(job, "info", "Files validated, moving job to queued state", "message")
        elif job.status == "queued":
            job.status = "running"
            self._event(job, "info", "Fine-tuning job started", "message")
        elif job.status == "running":
            if job.suffix and "fail" in job.suffix and job.step >= 1:
                job.status, job.finished_at = "failed", int(time.time())
                job.error = {"code": "invalid_training_file", "param": "training_file",
                             "message": "The job failed due to an invalid training file."}
                self._event(job, "error", job.error["message"], "message")
                return
            job.step += 1
            loss = round(2.0 * 0.85 ** job.step, 4)
            metrics = {"step": job.step, "train_loss": loss, "total_steps": job.total_steps,
                       "train_mean_token_accuracy": round(min(1.0, 0.4 + 0.05 * job.step), 4)}
            if job.validation_file:  # as OpenAI does: validation metrics on the steps, full ones at the end
                metrics.update(valid_loss=round(loss + 0.1, 4),
                               valid_mean_token_accuracy=round(min(1.0, 0.35 + 0.05 * job.step), 4))
                if job.step >= job.total_steps:
                    metrics.update(full_valid_loss=round(loss + 0.05, 4),
                                   full_valid_mean_token_accuracy=round(min(1.0, 0.38 + 0.05 * job.step), 4))
            self._event(job, "info", f"Step {job.step}/{job.total_steps}: training loss={loss}", "metrics", metrics)
            if job.step % STEPS_PER_EPOCH == 0:
                self._checkpoint(job, loss)
            if job.step >= job.total_steps:
                job.status, job.finished_at = "succeeded", int(time.time())
                job.fine_tuned_model = f"ft:{job.model}:fake-org:{job.suffix or 'custom'}:{job.id[-6:]}"
                size = self.files[job.training_file]["bytes"]
                job.trained_tokens = size // 4 * job.n_epochs
                self._event(job, "info", "The job has successfully completed", "message")

    def _event(self, job: FakeJob, level: str, message: str, kind: str, data: dict | None = None) -> None:
        event = {"object": "fine_tuning.job.event", "id": self._new_id("ftevent"), "created_at": int(time.time()),
                 "level": level, "message": message, "type": kind}
        if data is not None:
            event["data"] = data
        job.events.append(event)

    def _checkpoint(self, job: FakeJob, loss: float) -> None:
        job.checkpoints.append({
            "object": "fine_tuning.job.checkpoint", "id": self._new_id("ftckpt"), "created_at": int(time.time()),
            "fine_tuned_model_checkpoint": f"ft:{job.model}:fake-org::{job.id[-6:]}:ckpt-step-{job.step}",
            "step_number": job.step, "fine_tuning_job_id": job.id,
            "metrics": {"step": float(job.step), "train_loss": loss},
        })

    def _job_json(self, job: FakeJob) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job", "id": job.id, "created_at": job.created_at, "model": job.model,
            "organization_id": "org-fake", "status": job.status, "training_file": job.training_file,
            "validation_file": job.validation_file, "result_files": [], "seed": 42,
            "fine_tuned_model": job.fine_tuned_model, "finished_at": job.finished_at,
            "trained_tokens": job.trained_tokens, "error": job.error, "method": job.method,
            "hyperparameters": {"n_epochs": job.n_epochs, "batch_size": "auto", "learning_rate_multiplier": "auto"},
            "metadata": job.metadata, "estimated_finish": None,
        }


def _metadata_filter(request: Request) -> dict[str, str] | None:
    """The `metadata` query parameter (deepObject, explode): `metadata[k]=v` pairs to match, or the
    literal `metadata=null` for jobs without metadata (returned as None); {} filters nothing."""
    if request.query_params.get("metadata") == "null":
        return None
    return {key[len("metadata["):-1]: value for key, value in request.query_params.multi_items()
            if key.startswith("metadata[") and key.endswith("]")}


def _matches(metadata: dict[str, str] | None, wanted: dict[str, str] | None) -> bool:
    if wanted is None:
        return not metadata
    return all((metadata or {}).get(k) == v for k, v in wanted.items())


def _not_found(job_id: str) -> JSONResponse:
    return JSONResponse({"error": {"message": f"No such job: {job_id}", "type": "invalid_request_error",
                                   "param": None, "code": None}}, status_code=404)

"""The curation service's HTTP routes. HTTP only: parse, authorize, call a handler, shape the answer."""

import asyncio
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from services.curation import domain, handlers, repository
from services.curation.schemas import (
    BulkCreate,
    BulkResult,
    DatasetCreate,
    DatasetOut,
    DatasetPage,
    DatasetPatch,
    DatasetType,
    ExportOut,
    ExportRequest,
    PairCreate,
    PairOut,
    PairPage,
    PairPatch,
    Status,
    Strategy,
    ValidateRequest,
)
from shared.http import DB, CorrelationId, Curator, ServiceRoute, Viewer
from shared.objectstore import ObjectNotFound, default_store
from shared.paging import created_cursor, decode_cursor, page_of

datasets = APIRouter(prefix="/api/training-datasets", tags=["training datasets"], route_class=ServiceRoute)
pairs = APIRouter(prefix="/api/preference-pairs", tags=["preference pairs"], route_class=ServiceRoute)

Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=200)]


def object_store(request: Request):
    """The store exports go to: the process's, kept per app (tests may set app.state.object_store)."""
    if getattr(request.app.state, "object_store", None) is None:
        request.app.state.object_store = default_store()
    return request.app.state.object_store


Store = Annotated[object, Depends(object_store)]


# ---------------------------------------------------------------------------------------------
# Training datasets


@datasets.post("", status_code=201, response_model=DatasetOut)
async def create_dataset(body: DatasetCreate, principal: Curator, database: DB):
    async with database.unit_of_work() as uow:
        return await handlers.create_dataset(uow, principal.organization, domain.CreateDataset(**body.model_dump()))


@datasets.get("", response_model=DatasetPage)
async def list_datasets(
    principal: Viewer, database: DB, status: Status | None = None, dataset_type: DatasetType | None = None,
    cursor: Cursor = None, limit: Limit = 50,
):
    after = decode_cursor(cursor) if cursor else None
    async with database.read() as session:
        rows = await repository.page_datasets(
            session, principal.organization, status=status, dataset_type=dataset_type, after=after, limit=limit + 1
        )
    rows, next_cursor = page_of(rows, limit, created_cursor)
    return DatasetPage(items=[DatasetOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@datasets.get("/{dataset_id}", response_model=DatasetOut)
async def get_dataset(dataset_id: uuid.UUID, principal: Viewer, database: DB):
    async with database.read() as session:
        row = await repository.get_dataset(session, principal.organization, dataset_id)
    if row is None:
        raise domain.NotFound("dataset", dataset_id)
    return row


@datasets.patch("/{dataset_id}", response_model=DatasetOut)
async def update_dataset(dataset_id: uuid.UUID, patch: DatasetPatch, principal: Curator, database: DB):
    change = domain.ChangeDataset(given=frozenset(patch.model_fields_set), **patch.model_dump())
    async with database.unit_of_work() as uow:
        return await handlers.update_dataset(uow, principal.organization, dataset_id, change)


@datasets.delete("/{dataset_id}", response_model=DatasetOut)
async def archive_dataset(dataset_id: uuid.UUID, principal: Curator, database: DB):
    async with database.unit_of_work() as uow:
        return await handlers.archive_dataset(uow, principal.organization, dataset_id)


@datasets.post("/{dataset_id}/validate")
async def validate_dataset(
    dataset_id: uuid.UUID, principal: Curator, database: DB, body: ValidateRequest | None = None
):
    async with database.unit_of_work() as uow:
        return await handlers.validate_dataset(uow, database, principal.organization, dataset_id,
                                               body.format if body else None)


@datasets.post("/{dataset_id}/export", status_code=201, response_model=ExportOut)
async def export_dataset(
    dataset_id: uuid.UUID, body: ExportRequest, principal: Curator, database: DB, store: Store, cid: CorrelationId
):
    command = domain.ExportDataset(dataset_id=dataset_id, **body.model_dump())
    async with database.unit_of_work() as uow:
        return await handlers.export_dataset(uow, database, store, principal.organization, command,
                                             actor=principal.name, correlation_id=cid)


@datasets.get("/{dataset_id}/exports", response_model=list[ExportOut])
async def list_exports(dataset_id: uuid.UUID, principal: Viewer, database: DB):
    async with database.read() as session:
        if await repository.get_dataset(session, principal.organization, dataset_id) is None:
            raise domain.NotFound("dataset", dataset_id)
        return await repository.list_exports(session, principal.organization, dataset_id)


@datasets.get("/{dataset_id}/exports/{version}/files/{name}")
async def download_export_file(
    dataset_id: uuid.UUID, version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    name: Literal["train", "validation", "manifest", "sources"],
    principal: Viewer, database: DB, store: Store,
):
    """Streams one file of an export version from the object store (what `rlhf datasets export` fetches)."""
    async with database.read() as session:
        export = await repository.get_export(session, principal.organization, dataset_id, version)
    if export is None:
        raise domain.NotFound("export", f"v{version} of dataset {dataset_id}")
    url = {"train": export.url, "validation": export.validation_url, "manifest": export.manifest_url,
           "sources": export.manifest_url.rsplit("/", 1)[0] + "/sources.jsonl"}[name]
    if not url:
        raise domain.NotFound("file", f"{name} of export v{version}")
    try:
        source = await asyncio.to_thread(store.open, url)
    except (ObjectNotFound, FileNotFoundError) as exc:
        raise domain.NotFound("file", url) from exc
    filename = url.rsplit("/", 1)[-1]

    def chunks():
        try:
            yield from iter(lambda: source.read(1 << 20), b"")
        finally:
            source.close()

    return StreamingResponse(
        chunks(), media_type="application/octet-stream",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


# ---------------------------------------------------------------------------------------------
# Preference pairs


@pairs.post("", status_code=201, response_model=PairOut)
async def create_pair(body: PairCreate, principal: Curator, database: DB):
    async with database.unit_of_work() as uow:
        return await handlers.create_pair(uow, principal.organization, domain.CreatePair(**body.model_dump()))


@pairs.post("/bulk", status_code=201, response_model=BulkResult,
            responses={200: {"model": BulkResult, "description": "dry_run: what each strategy would add"}})
async def bulk_create_pairs(body: BulkCreate, principal: Curator, database: DB, response: Response):
    command = domain.PairFeedback(**body.model_dump(exclude={"dry_run"}))
    async with database.unit_of_work() as uow:
        created, sample_count = await handlers.bulk_create_pairs(uow, principal.organization, command,
                                                                 dry_run=body.dry_run)
    if body.dry_run:
        response.status_code = 200
    return BulkResult(dataset_id=body.dataset_id, created=created, sample_count=sample_count, dry_run=body.dry_run)


@pairs.get("", response_model=PairPage)
async def list_pairs(
    principal: Viewer,
    database: DB,
    dataset_id: uuid.UUID | None = None,
    annotator: str | None = Query(default=None, max_length=320),
    min_strength: float | None = Query(default=None, ge=0, le=1),
    max_strength: float | None = Query(default=None, ge=0, le=1),
    q: str | None = Query(default=None, min_length=1, max_length=200),
    strategy: Strategy | Literal["manual"] | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
):
    after = decode_cursor(cursor) if cursor else None
    f = repository.PairFilter(dataset_id, annotator, min_strength, max_strength, q, strategy)
    async with database.read() as session:
        rows = await repository.page_pairs(session, principal.organization, f, after=after, limit=limit + 1)
    rows, next_cursor = page_of(rows, limit, created_cursor)
    return PairPage(items=[PairOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@pairs.get("/{pair_id}", response_model=PairOut)
async def get_pair(pair_id: uuid.UUID, principal: Viewer, database: DB):
    async with database.read() as session:
        row = await repository.get_pair(session, principal.organization, pair_id)
    if row is None:
        raise domain.NotFound("preference pair", pair_id)
    return row


@pairs.patch("/{pair_id}", response_model=PairOut)
async def update_pair(pair_id: uuid.UUID, patch: PairPatch, principal: Curator, database: DB):
    change = domain.ChangePair(given=frozenset(patch.model_fields_set), **patch.model_dump())
    async with database.unit_of_work() as uow:
        return await handlers.update_pair(uow, principal.organization, pair_id, change)


@pairs.delete("/{pair_id}", status_code=204)
async def delete_pair(pair_id: uuid.UUID, principal: Curator, database: DB):
    async with database.unit_of_work() as uow:
        await handlers.delete_pair(uow, principal.organization, pair_id)
    return Response(status_code=204)

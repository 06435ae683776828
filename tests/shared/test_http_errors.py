"""The error answers every service declares and gives (issue 13): a route's OpenAPI lists the
statuses it can answer (shared.http.ServiceRoute), in the one error shape; Starlette's and
FastAPI's own refusals (a body that is not UTF-8, an unknown path, a wrong method) come in that
shape too. tests/rlhf/test_schemathesis.py checks the running services against these documents."""

import uuid

import httpx
from fastapi import APIRouter
from pydantic import BaseModel

from shared.http import Curator, ServiceRoute, Viewer, create_app


class Thing(BaseModel):
    name: str


router = APIRouter(prefix="/api/things", route_class=ServiceRoute)


@router.get("/me")
async def me(principal: Viewer):
    return {}


@router.get("")
async def page(principal: Viewer, cursor: str | None = None):
    return {}


@router.patch("/{thing_id}")
async def change(thing_id: uuid.UUID, body: Thing, principal: Curator):
    return {}


@router.delete("/{thing_id}", responses={409: {"description": "a route's own declaration wins"}})
async def remove(thing_id: uuid.UUID, principal: Curator):
    return {}


def app():
    built = create_app(service="things", max_body_bytes=1000)
    built.include_router(router)
    return built


def declared(document: dict, path: str, method: str) -> dict[str, dict]:
    return {int(s): r for s, r in document["paths"][path][method]["responses"].items() if s != "default"}


def test_each_route_declares_the_errors_it_can_give_in_the_one_shape():
    document = app().openapi()
    assert set(declared(document, "/api/things/me", "get")) == {200, 401, 422, 429}
    assert set(declared(document, "/api/things", "get")) == {200, 400, 401, 422, 429}  # a cursor can be forged
    change_ = declared(document, "/api/things/{thing_id}", "patch")
    assert set(change_) == {200, 400, 401, 403, 404, 409, 413, 422, 429}
    assert change_[422]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    remove_ = declared(document, "/api/things/{thing_id}", "delete")
    assert set(remove_) == {200, 401, 403, 404, 409, 422, 429}
    assert remove_[409]["description"] == "a route's own declaration wins"
    body = document["components"]["schemas"]["ErrorBody"]
    assert body["required"] == ["error", "message"] and "HTTPValidationError" not in document["components"]["schemas"]


async def test_starlettes_own_refusals_answer_in_the_error_shape():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://things") as client:
        not_utf8 = await client.patch(f"/api/things/{uuid.uuid4()}", content=b'{"name": "\xff"}',
                                      headers={"content-type": "application/json", "authorization": "Bearer x"})
        unknown = await client.get("/api/nothing-here")
        wrong_method = await client.put("/api/things/me")
    assert not_utf8.status_code == 400 and not_utf8.json()["errors"] == [{"field": "body", "message": not_utf8.json()[
        "message"]}]
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"

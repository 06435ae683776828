"""What every service's HTTP side shares: auth dependency, error shapes, body limits, metrics,
correlation ids. A service's api.py only declares its routes and maps its domain errors."""

import time
import uuid
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.utils import get_dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import AuthError, Forbidden, KeyVerifier, Principal, Role, client_address
from shared.db import Database
from shared.errors import DomainError, FieldValueError
from shared.input_guard import NOT_PARSED, PARSED_BODY, InputGuardMiddleware
from shared.observability import HTTP_LATENCY, get_logger

HTTP_STATUSES = {status.value for status in HTTPStatus}
CORRELATION_HEADER = "x-correlation-id"
log = get_logger(__name__)
MAX_CORRELATION_ID = 200


def error(status: int, code: str, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


class FieldError(BaseModel):
    field: str  # dotted path into the request: `feedback_value.rating`, `query.tag`, `path.version`
    message: str


class ErrorBody(BaseModel):
    """Every error answer of every service (shared.errors): a code, a message, the fields at fault."""

    model_config = ConfigDict(extra="allow")

    error: str
    message: str
    errors: list[FieldError] | None = None


ERRORS = {
    400: "the body is not JSON, or a cursor is not one this API returned",
    401: "no API key, or one that is unknown, revoked or expired",
    403: "the key's role is too low for this action",
    404: "no such thing in the caller's organization",
    409: "the thing's current state does not allow this",
    413: "the request body is over the size limit",
    422: "the request is invalid; `errors` names each field at fault",
    429: "too many failed authentications from this address; Retry-After says when to try again",
}
_BODY_METHODS = {"POST", "PUT", "PATCH"}


def error_statuses(path: str, methods: set[str], dependant) -> list[int]:
    """The error answers a route can give, from what it takes: every route checks a key (401, 429)
    and its input (422); a body can be malformed (400), too large (413) or name what does not exist
    (404); a cursor can be forged (400); a path names a thing (404); a change can conflict (409); a
    role above viewer can be missing (403)."""
    has_body = bool(methods & _BODY_METHODS) and dependant.body_params
    statuses = {401, 422, 429}
    if has_body or any(p.name == "cursor" for p in dependant.query_params):
        statuses.add(400)
    if _needs_more_than_viewer(dependant):
        statuses.add(403)
    if "{" in path or has_body:
        statuses.add(404)
    if methods - {"GET", "HEAD"}:
        statuses.add(409)
    if methods & _BODY_METHODS:
        statuses.add(413)
    return sorted(statuses)


def _needs_more_than_viewer(dependant) -> bool:
    role = getattr(dependant.call, "required_role", None)
    return (role is not None and role > Role.viewer) or any(_needs_more_than_viewer(d) for d in dependant.dependencies)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for these statuses in the shape every service answers errors with."""
    return {status: {"model": ErrorBody, "description": ERRORS.get(status, "")} for status in statuses}


class ServiceRoute(APIRoute):
    """A route whose OpenAPI declares the error answers it can give (`error_statuses`) in the shape
    they have (`ErrorBody`). A route's own `responses=` win. Every service's routers use it
    (`APIRouter(..., route_class=ServiceRoute)`)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, responses=None, methods=None, **kwargs: Any):
        methods_set = {m.upper() for m in (methods or ["GET"])}
        declared = error_responses(*error_statuses(path, methods_set, get_dependant(path=path, call=endpoint)))
        super().__init__(path, endpoint, responses={**declared, **(responses or {})}, methods=methods, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_guarded_body(request: Request) -> Response:
            return await handler(GuardedRequest(request.scope, request.receive))

        return with_guarded_body


class GuardedRequest(Request):
    """A request whose JSON body the input guard parsed already (orjson, in C): `json()` returns that
    document instead of parsing the body again with the stdlib (~5 ms for a 1,000-item batch)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            parsed = self.scope.get(PARSED_BODY, NOT_PARSED)
            self._json = parsed if parsed is not NOT_PARSED else await super().json()
        return self._json


def field_errors(errors) -> list[dict]:
    """pydantic errors as [{field, message}], with the request-body prefix dropped; a model-wide
    validator's FieldValueError names the field inside the model it is about."""
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        inner = (e.get("ctx") or {}).get("error")
        if isinstance(inner, FieldValueError):
            loc.append(inner.field)
        out.append({"field": ".".join(loc) or "body", "message": e.get("msg", "invalid")})
    return out


class ObserveMiddleware:
    """Correlation id (from X-Correlation-ID or new) in logs, request state and the response, and
    the latency histogram by route. Plain ASGI: BaseHTTPMiddleware costs a task and a stream per call."""

    def __init__(self, app: ASGIApp, service: str):
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        correlation_id = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-correlation-id":
                correlation_id = value.decode("latin-1")
        if not correlation_id or len(correlation_id) > MAX_CORRELATION_ID:
            correlation_id = str(uuid.uuid4())
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-correlation-id"]
                message["headers"] = [*headers, (b"x-correlation-id", correlation_id.encode())]
            await send(message)

        try:
            with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
                await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            HTTP_LATENCY.labels(
                self.service, scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).observe(time.perf_counter() - start)


class BodyLimitMiddleware:
    """413 for bodies over the limit, whether or not the client sent Content-Length. Past the limit
    the app is told the client went away (it cannot mistake a cut body for a whole one, and FastAPI
    would call the failed read a 400 "error parsing the body"), and whatever it answers is replaced
    by the 413."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await _too_large(limit, send)
        seen, too_large, answered = 0, False, False

        async def limited_receive() -> Message:
            nonlocal seen, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if too_large:
                if not answered:
                    answered = True
                    await _too_large(limit, send)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not answered:
            await _too_large(limit, send)


async def _too_large(limit: int, send: Send) -> None:
    response = error(413, "body_too_large", f"request body exceeds {limit} bytes")
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class ServiceApp(FastAPI):
    """A FastAPI app whose unexpected errors end as a complete 500 (our error shape, logged with the
    correlation id) without the exception reaching the server: uvicorn closes a kept-alive connection
    when an app raises, and a client (the gateway) that had just taken that connection for another
    request, perhaps another organization's, would see it fail."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        complete = False

        async def tracking_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        try:
            await super().__call__(scope, receive, tracking_send)
        except Exception:
            if not complete:
                raise
            log.exception("unexpected error; answered 500", path=scope.get("path"))


def create_app(
    *,
    service: str,
    max_body_bytes: int,
    large_body_paths: dict[str, int] | None = None,
    lifespan=None,
    guard_input: bool = True,
) -> FastAPI:
    app = ServiceApp(title=f"Betabase RLHF — {service}", lifespan=lifespan)
    large = large_body_paths or {}

    app.add_middleware(ObserveMiddleware, service=service)
    if guard_input:  # inside the body limit: it reads the body only once the limit has passed it
        app.add_middleware(InputGuardMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit_for=lambda path: large.get(path, max_body_bytes))

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError):
        errors = field_errors(exc.errors())
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        first = f"{errors[0]['field']}: {errors[0]['message']}{more}" if errors else "request is invalid"
        return error(422, "validation_error", first, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # Starlette's and FastAPI's own refusals (a body that is not UTF-8 JSON, an unknown path, a
        # method the path does not take) in the same shape as every other error.
        phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTP_STATUSES else "error"
        body = {"error": phrase.lower().replace(" ", "_"), "message": str(exc.detail)}
        if exc.status_code == 400:
            body["errors"] = [{"field": "body", "message": str(exc.detail)}]
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        cid = getattr(request.state, "correlation_id", "")
        return error(500, "internal_error", f"an unexpected error; correlation id {cid} names it in the logs")

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    add_probes(app, service)
    return app


def add_probes(app: FastAPI, service: str) -> None:
    """`/healthz` and `/metrics` (Prometheus), outside the API's schema."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"status": "ok", "service": service}

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def probes_app(service: str) -> FastAPI:
    """What a process without the API serves (a relay or a consumer of its own): its health and its
    metrics, so that its counters reach Prometheus as the API process's do."""
    app = FastAPI(title=f"{service} probes", openapi_url=None, docs_url=None, redoc_url=None)
    add_probes(app, service)
    return app


async def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing bearer API key (Authorization: Bearer <key>)")
    verifier: KeyVerifier = request.app.state.verifier
    peer = request.client.host if request.client else None
    forwarded = ", ".join(request.headers.getlist("x-forwarded-for"))
    return await verifier.verify(token.strip(), client=client_address(peer, forwarded, verifier.trusted_proxies))


def require(role: Role):
    """Dependency: the caller, who must hold at least `role`."""

    async def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        if not principal.can(role):
            raise Forbidden(f"this action needs the {role.name} role; your key is {principal.role.name}")
        return principal

    dependency.required_role = role  # what ServiceRoute reads to declare the 403
    return dependency


async def correlation_id(request: Request) -> str:
    return request.state.correlation_id


async def database(request: Request) -> Database:
    return request.app.state.db


# What route signatures ask for, the same in every service.
Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Curator = Annotated[Principal, Depends(require(Role.curator))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
CorrelationId = Annotated[str, Depends(correlation_id)]
DB = Annotated[Database, Depends(database)]

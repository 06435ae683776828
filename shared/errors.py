"""Domain errors: what went wrong in a service's own terms, with the HTTP answer it deserves.

A service raises a subclass (or an instance with its own status/code) from its domain or handlers;
`shared.http.create_app` maps every DomainError to one body shape, the same in every service:

    {"error": <code>, "message": <text>, "errors": [{"field": <field>, "message": <text>}], ...extra}

`errors` is present when the error names a field (dotted path into the request: `feedback_value.rating`).
"""

from typing import Any


class DomainError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        status: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers
        self.extra = extra
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field:
            body["errors"] = [{"field": self.field, "message": self.message}]
        return body | self.extra


class FieldValueError(ValueError):
    """Raised by a model-wide pydantic validator about one field inside the model, so that the 422
    names that field (`feedback_value.rating`) rather than the whole body."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field = field


class NotFound(DomainError):
    """No such thing in the caller's organization (another organization's ids answer the same)."""

    status, code = 404, "not_found"


class Conflict(DomainError):
    """The request is valid but the current state does not allow it."""

    status, code = 409, "conflict"


class Invalid(DomainError):
    """Input that breaks a rule pydantic cannot express, naming the field."""

    status, code = 422, "validation_error"

    def __init__(self, field: str, message: str, **kwargs: Any):
        super().__init__(message, field=field, **kwargs)

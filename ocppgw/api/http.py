"""What every API handler sees and answers, independent of the web server that serves it.

A handler takes an ``ApiRequest`` (already authenticated, its JSON body parsed) and returns an
``ApiResponse`` or a Deferred of one, or raises ``ApiError``; the server turns those into HTTP with
the reference's error body ``{"code": ..., "message": ...}``. Routes are ``Route`` values; a path
pattern's ``{name}`` segments arrive in ``path_params`` (percent-decoded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

ADMINISTRATOR = "administrator"
VIEWER = "viewer"
ROLES = (ADMINISTRATOR, VIEWER)


class ApiError(Exception):
    """An answer other than success: ``status`` with the body ``{"code": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BAD_REQUEST", message)


@dataclass(frozen=True)
class ApiRequest:
    """One authenticated request."""

    method: str  # GET, POST, PUT, DELETE
    path: str  # as requested, under /api/v5 (e.g. /gateways/ocpp/clients/CP1)
    path_params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    body: Any = None  # the parsed JSON body, None when there is none
    raw_body: bytes = b""
    content_type: str = ""
    role: str = ADMINISTRATOR
    principal: str = ""  # the administrator's name or the API key, for logs
    peer: str = ""  # the client's IP address (login lockout)
    headers: Mapping[str, str] = field(default_factory=dict)  # names in lower case

    def arg(self, name: str) -> str | None:
        """The first value of query parameter ``name``, None when absent."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class ApiResponse:
    """``body`` is JSON-serialisable; None (with 204) sends no body."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[ApiRequest], "ApiResponse | Deferred[ApiResponse]"]


@dataclass(frozen=True)
class Route:
    """``method`` and ``pattern`` (``/gateways/ocpp/clients/{clientid}``) served by ``handler``.

    ``summary`` and ``responses`` (status -> description) feed the OpenAPI document."""

    method: str
    pattern: str
    handler: Handler
    summary: str = ""
    responses: Mapping[int, str] = field(default_factory=dict)
    public: bool = False  # no authentication (POST /login)


def paginate(items: Sequence[Any], request: ApiRequest, count: bool = True) -> dict[str, Any]:
    """``{"data": [...], "meta": {"page", "limit", "hasnext"[, "count"]}}`` of ``items`` for the
    request's ``page`` (>= 1, default 1) and ``limit`` (1..10000, default 100); a fuzzy (``like_*``)
    query passes ``count=False``, as the reference omits the count then."""
    page = _positive(request.arg("page"), 1)
    limit = _positive(request.arg("limit"), 100)
    if limit > 10000:
        raise ApiError(400, "INVALID_PARAMETER", "page_limit_invalid")
    start = (page - 1) * limit
    meta: dict[str, Any] = {"page": page, "limit": limit, "hasnext": len(items) > start + limit}
    if count:
        meta["count"] = len(items)
    return {"data": list(items[start : start + limit]), "meta": meta}


def _positive(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f"not an integer: {text[:40]!r}") from None
    if value <= 0:
        raise ApiError(400, "INVALID_PARAMETER", "page_limit_invalid")
    return value

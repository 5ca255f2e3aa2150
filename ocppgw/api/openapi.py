"""``GET /api-docs/swagger.json``: an OpenAPI 3 document made from the served ``Route`` lists, so it
cannot drift from what is served (a schemathesis test holds the server to it)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ocppgw.api.http import ApiRequest, ApiResponse, Route

DOCS_PATH = "/api-docs/swagger.json"
_INTEGER_PARAMETERS = {"page", "limit"}
_ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
}


def _response(description: str, error: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description or "success"}
    if error:
        answer["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return answer


def _operation(route: Route, full_path: str, query: Sequence[str]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in re.findall(r"\{([a-z_]+)\}", full_path)
    ]
    for name in query:
        schema = {"type": "integer", "minimum": 1} if name in _INTEGER_PARAMETERS else {"type": "string"}
        parameters.append({"name": name, "in": "query", "required": False, "schema": schema})
    responses = {str(status): _response(text, status >= 400) for status, text in route.responses.items()}
    if route.method in ("POST", "PUT") or query:
        responses.setdefault("400", _response("BAD_REQUEST", True))
    if parameters and any(p["in"] == "path" for p in parameters):
        responses.setdefault("404", _response("not found", True))
    operation: dict[str, Any] = {"summary": route.summary, "parameters": parameters, "responses": responses}
    if route.public:
        operation["security"] = []
    else:
        responses.setdefault("401", _response("not authenticated", True))
        responses.setdefault("403", _response("role not allowed", True))
    if route.method in ("POST", "PUT"):
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return operation


def document(
    routes: Sequence[Route],
    root_routes: Sequence[Route],
    query: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3 document of ``routes`` (under ``/api/v5``) and ``root_routes``; ``query`` names
    the query parameters of a route pattern."""
    query = query or {}
    paths: dict[str, dict[str, Any]] = {}
    for prefix, group in (("/api/v5", routes), ("", root_routes)):
        for route in group:
            full = prefix + route.pattern
            paths.setdefault(full, {})[route.method.lower()] = _operation(
                route, full, query.get(route.pattern, ())
            )
    return {
        "openapi": "3.0.3",
        "info": {"title": "ocppgw management API", "version": "5"},
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic"},
                "bearerAuth": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"basicAuth": []}, {"bearerAuth": []}],
    }


def routes(
    api_routes: Sequence[Route],
    root_routes: Sequence[Route],
    query: Mapping[str, Sequence[str]] | None = None,
) -> list[Route]:
    """The route serving the document of ``api_routes`` and ``root_routes`` (itself included)."""
    served: list[Route] = []

    def swagger(request: ApiRequest) -> ApiResponse:
        return ApiResponse(200, document(api_routes, [*root_routes, *served], query))

    served.append(Route("GET", DOCS_PATH, swagger, "This OpenAPI document", {200: "OpenAPI 3"}))
    return served

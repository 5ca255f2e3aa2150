"""The management API on Twisted Web: routing, authentication, JSON in and out, security headers.

Every response carries the security headers, including errors and whatever a child resource
(the dashboard's static files) serves. A body is read up to ``MAX_UPLOAD`` bytes while it arrives
(more is discarded, never buffered); each route then allows ``MAX_BODY`` (``MAX_UPLOAD`` for an
import). A handler's unexpected exception is logged and answered 500 ``INTERNAL_ERROR`` without
its traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.static import File

from ocppgw.api.auth import API_KEY_NOT_ALLOWED, WWW_AUTHENTICATE, ApiAuth
from ocppgw.api.http import ADMINISTRATOR, VIEWER, ApiError, ApiRequest, ApiResponse, Route

API_PREFIX = "/api/v5"
MAX_BODY = 1024 * 1024
MAX_UPLOAD = 16 * 1024 * 1024
UPLOAD_SUFFIXES = ("/import_users",)
SECURITY_HEADERS = {
    b"Content-Security-Policy": (
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        b"form-action 'self'; frame-ancestors 'none'"
    ),
    b"X-Frame-Options": b"DENY",
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
}


class SecureRequest(Request):
    """A request whose body stops being kept past ``MAX_UPLOAD`` bytes, answered with the headers."""

    body_size = 0

    def handleContentChunk(self, data: bytes) -> None:
        self.body_size += len(data)
        if self.body_size <= MAX_UPLOAD:
            super().handleContentChunk(data)

    def process(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        super().process()


@dataclass(frozen=True)
class _Compiled:
    route: Route
    path: str  # the full path pattern, as the OpenAPI document shows it
    regex: re.Pattern[str]


def compile_routes(routes: Sequence[Route], root_routes: Sequence[Route]) -> list[_Compiled]:
    """Routes under ``/api/v5`` and at the root, each pattern as a regular expression."""
    compiled = []
    for prefix, group in ((API_PREFIX, routes), ("", root_routes)):
        for route in group:
            path = prefix + route.pattern
            regex = "".join(
                f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part)
                for part in re.split(r"(\{[a-z_]+\})", path)
            )
            compiled.append(_Compiled(route, path, re.compile(regex)))
    return compiled


def json_bytes(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class ApiResource(Resource):
    """Every path not served by a child: the routes, else 404 ``RESOURCE_NOT_FOUND`` (405 for a known
    path with another method)."""

    isLeaf = True
    _log = Logger()

    def __init__(self, routes: list[_Compiled], auth: ApiAuth) -> None:
        super().__init__()
        self.routes = routes
        self.auth = auth

    def render(self, request: Request) -> Any:
        d = maybeDeferred(self._handle, request)
        finished = {"gone": False}
        request.notifyFinish().addErrback(lambda _: finished.update(gone=True))

        def answer(response: ApiResponse) -> None:
            if not finished["gone"]:
                self._write(request, response)

        def failed(failure: Failure) -> None:
            if isinstance(failure.value, ApiError):
                answer(_error(failure.value))
                return
            self._log.failure("API {method} {path} failed", failure, method=request.method, path=request.path)
            answer(ApiResponse(500, {"code": "INTERNAL_ERROR", "message": "internal error"}))

        d.addCallbacks(answer, failed)
        return NOT_DONE_YET

    def _handle(self, request: Request) -> Any:
        path = request.path.decode("utf-8", "replace")
        match, allowed = self._match(request.method.decode("ascii", "replace"), path)
        if match is None:
            if allowed:
                raise ApiError(405, "METHOD_NOT_ALLOWED", f"allowed: {', '.join(allowed)}")
            raise ApiError(404, "RESOURCE_NOT_FOUND", "Resource not found")
        compiled, params = match
        route = compiled.route
        headers = {
            k.decode("latin-1").lower(): v[-1].decode("latin-1")
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        role, principal = VIEWER, ""
        if not route.public:
            who = self.auth.authenticate(headers.get("authorization"))
            role, principal = who.role, who.name
            if who.kind == "api_key" and compiled.path.removeprefix(API_PREFIX) in API_KEY_NOT_ALLOWED:
                raise ApiError(
                    401, "API_KEY_NOT_ALLOW", "Please use bearer Token instead, using API key/secret"
                )
            if role != ADMINISTRATOR and route.method != "GET" and compiled.path != API_PREFIX + "/logout":
                raise ApiError(403, "UNAUTHORIZED_ROLE", "the viewer role may only read (GET)")
        raw, body = self._body(request, path, headers.get("content-type", ""))
        client = request.getClientAddress()
        api_request = ApiRequest(
            method=route.method,
            path=path.removeprefix(API_PREFIX),
            path_params={name: unquote(value) for name, value in params.items()},
            query=_query(request),
            body=body,
            raw_body=raw,
            content_type=headers.get("content-type", ""),
            role=role,
            principal=principal,
            peer=getattr(client, "host", ""),
            headers=headers,
        )
        return route.handler(api_request)

    def _match(self, method: str, path: str) -> tuple[tuple[_Compiled, dict[str, str]] | None, list[str]]:
        allowed = []
        for compiled in self.routes:
            found = compiled.regex.fullmatch(path)
            if found is None:
                continue
            if compiled.route.method == method:
                return (compiled, found.groupdict()), []
            allowed.append(compiled.route.method)
        return None, allowed

    def _body(self, request: Request, path: str, content_type: str) -> tuple[bytes, Any]:
        cap = MAX_UPLOAD if path.endswith(UPLOAD_SUFFIXES) else MAX_BODY
        if getattr(request, "body_size", 0) > cap:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", f"request body over {cap} bytes")
        request.content.seek(0)
        raw = request.content.read()
        if not raw or content_type.startswith("multipart/"):
            return raw, None
        try:
            return raw, json.loads(raw)
        except ValueError as e:
            raise ApiError(400, "BAD_REQUEST", f"malformed JSON body: {str(e)[:120]}") from None

    def _write(self, request: Request, response: ApiResponse) -> None:
        request.setResponseCode(response.status)
        for name, value in response.headers.items():
            request.setHeader(name, value)
        if response.status == 401:
            request.setHeader("WWW-Authenticate", WWW_AUTHENTICATE)
        if response.body is None or response.status == 204:
            request.finish()
            return
        if isinstance(response.body, bytes):
            data = response.body
        else:
            data = json_bytes(response.body)
            request.setHeader("Content-Type", "application/json")
        request.setHeader("Content-Length", str(len(data)))
        request.write(data)
        request.finish()


def _error(error: ApiError) -> ApiResponse:
    return ApiResponse(error.status, {"code": error.code, "message": error.message})


def _query(request: Request) -> dict[str, list[str]]:
    try:
        return {k.decode("utf-8"): [v.decode("utf-8") for v in vs] for k, vs in request.args.items()}
    except UnicodeDecodeError:
        raise ApiError(400, "BAD_REQUEST", "query string is not UTF-8") from None


class ApiRoot(Resource):
    """The site's root: children put here (static files) first, every other path to the API."""

    def __init__(self, api: ApiResource) -> None:
        super().__init__()
        self.api = api

    def getChild(self, path: bytes, request: Request) -> Resource:
        request.prepath.pop()  # the API routes on the full path
        request.postpath.insert(0, path)
        return self.api

    def render(self, request: Request) -> Any:
        return self.api.render(request)


DASHBOARD_DIR = Path(__file__).parent / "dashboard"
DASHBOARD_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8"}
DASHBOARD_TYPES |= {".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


def add_dashboard(root: Resource, directory: Path = DASHBOARD_DIR) -> None:
    """The dashboard's files at the root (``/`` is its ``index.html``), public as static files are;
    each file is a child of its own, so no directory is ever listed."""
    for path in sorted(directory.iterdir()):
        if path.suffix in DASHBOARD_TYPES:
            page = File(str(path), DASHBOARD_TYPES[path.suffix])
            page.contentTypes = DASHBOARD_TYPES
            root.putChild(path.name.encode(), page)
            if path.name == "index.html":
                root.putChild(b"", page)


def make_site(routes: Sequence[Route], root_routes: Sequence[Route], auth: ApiAuth) -> Site:
    """A ``Site`` serving ``routes`` under ``/api/v5``, ``root_routes`` and the dashboard at the root."""
    root = ApiRoot(ApiResource(compile_routes(routes, root_routes), auth))
    add_dashboard(root)
    site = Site(root)
    site.requestFactory = SecureRequest
    site.displayTracebacks = False
    return site

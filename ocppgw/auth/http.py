"""``backend = http``: ask an HTTP server whether a charge point may connect.

The request is the reference's (``emqx_auth_http_utils:generate_request``): the URL's path and query
with placeholders URL-encoded, ``[authentication.headers]`` rendered raw over the default
``content-type: application/json``, ``[authentication.body]`` as a JSON object of strings, a form, or
(GET) more query parameters. Any response is an answer (issue 10): 204 allows; 200 with
``{"result": "allow" | "deny" | "ignore"}`` (JSON or a form) says so; any other status or body is
"ignore". No response at all (refused, TLS failure, past ``request_timeout``) is UNAVAILABLE.

A request that cannot be made from what the charge point sent (a non-UTF-8 password in a JSON body,
CR/LF/NUL in a header value) is "ignore", as the reference's request error under one authenticator
(``not_authorized``, A.9): the server is never asked and asking again would not help.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import orjson
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ocppgw.auth.common import BackendConfigError, WebClient, to_bool
from ocppgw.auth.template import PLACEHOLDER, render_bytes, render_text, value
from ocppgw.config.sections import AuthenticationSection
from ocppgw.core.ports import Credentials, Decision, IAuthenticator

log = Logger()

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
DEFAULT_HEADERS = {"content-type": JSON, "accept": JSON}
_TOKEN = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
_UNSAFE_IN_HEADER = (b"\r", b"\n", b"\0")
_KEEP_IN_URL = string.punctuation  # a configured URL is already URL-syntax: only encode the rest


class _Unsendable(Exception):
    """What the charge point sent cannot go into this request."""


def _split_url(url: str) -> tuple[str, str]:
    """(scheme://authority, the path, query and fragment): placeholders count only in the second."""
    start = url.find("://")
    if start < 0 or url[:start].lower() not in ("http", "https"):
        raise BackendConfigError("url", "must start with http:// or https://")
    cut = len(url)
    for mark in "/?#":
        at = url.find(mark, start + 3)
        if at >= 0:
            cut = min(cut, at)
    if cut == start + 3:
        raise BackendConfigError("url", "has no host")
    return url[:cut], url[cut:]


def _body_format(method: str, headers: Mapping[str, str]) -> str:
    if method == "get":
        return ""
    kind = headers.get("content-type", "").strip().lower()
    for known in (JSON, FORM):
        if kind.startswith(known):
            return known
    raise BackendConfigError("headers", f"content-type must be {JSON} or {FORM} for a POST body")


@implementer(IAuthenticator)
class HttpAuthenticator:
    """One HTTP server decides; see the module docstring for the request and the answer."""

    def __init__(self, section: AuthenticationSection, reactor: Any, clock: Any = None) -> None:
        self._method = section.method.lower()
        if self._method not in ("get", "post"):
            raise BackendConfigError("method", "must be post or get")
        self._url = section.url
        self._origin, self._rest = _split_url(section.url)
        headers = dict(DEFAULT_HEADERS)
        if self._method == "get":
            del headers["content-type"]
        for name, template in section.headers.items():
            if not name or not set(name) <= _TOKEN:
                raise BackendConfigError("headers", f"{name!r} is not a header name")
            headers[name.lower()] = template
        self._headers = headers
        self._format = _body_format(self._method, headers)
        self._body = dict(section.body)
        self._client = WebClient(section, reactor, clock)

    def start(self) -> None:
        """Nothing to do: connections are made on demand and kept alive in the pool."""

    def stop(self) -> Deferred[None]:
        return self._client.close()

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        try:
            url, headers, body = self._request(credentials)
        except _Unsendable as e:
            log.info("http auth for {cid}: not asked, {why}", cid=credentials.cid, why=str(e))
            return succeed(Decision.ignore())
        except Exception as e:  # a bug must not become a failed Deferred
            return succeed(Decision.unavailable(f"request not built: {type(e).__name__}"))
        d = self._client.fetch(self._method.upper(), url, headers, body)
        d.addCallbacks(self._answer, self._no_answer, errbackArgs=(credentials.cid,))
        d.addErrback(lambda f: Decision.unavailable(f"response not read: {f.type.__name__}"))
        return d

    def _request(self, credentials: Credentials) -> tuple[bytes, dict[bytes, list[bytes]], bytes | None]:
        url = self._origin + self._render_url_part(self._rest, credentials)
        body: bytes | None = None
        if self._body:
            if self._format == JSON:
                texts = {name: render_text(t, credentials) for name, t in self._body.items()}
                if any(text is None for text in texts.values()):
                    raise _Unsendable("a value for the JSON body is not UTF-8")
                body = orjson.dumps(texts)
            else:
                fields = urlencode([(name, render_bytes(t, credentials)) for name, t in self._body.items()])
                if self._format == FORM:
                    body = fields.encode("ascii")
                else:
                    url += ("" if url.endswith(("?", "&")) else ("&" if "?" in url else "?")) + fields
        elif self._format == JSON:
            body = b"{}"
        elif self._format == FORM:
            body = b""
        headers: dict[bytes, list[bytes]] = {}
        for name, template in self._headers.items():
            rendered = render_bytes(template, credentials)
            if any(bad in rendered for bad in _UNSAFE_IN_HEADER):
                raise _Unsendable(f"header {name} would contain CR, LF or NUL")
            headers[name.encode("ascii")] = [rendered]
        return url.encode("ascii"), headers, body

    @staticmethod
    def _render_url_part(template: str, credentials: Credentials) -> str:
        parts = PLACEHOLDER.split(template)
        return "".join(
            quote(value(part, credentials), safe="") if index % 2 else quote(part, safe=_KEEP_IN_URL)
            for index, part in enumerate(parts)
        )

    def _answer(self, response: tuple[int, str, bytes]) -> Decision:
        status, kind, body = response
        if status == 204:
            return Decision.allow()
        if status != 200:
            return Decision.ignore()
        fields = _fields(kind, body)
        if fields is None:
            return Decision.ignore()
        result = fields.get("result")
        if result == "allow":
            return Decision.allow(is_superuser=to_bool(fields.get("is_superuser")))
        if result == "deny":
            return Decision.deny("not_authorized")
        return Decision.ignore()  # "ignore", absent, or anything else

    def _no_answer(self, failure: Failure, cid: str) -> Decision:
        why = f"no response from {self._origin}: {failure.type.__name__}"
        log.warn("http auth for {cid}: {why}", cid=cid, why=why)
        return Decision.unavailable(why)


def _fields(kind: str, body: bytes) -> Mapping[str, Any] | None:
    """The answer's fields from a JSON object or a form; None for any other body."""
    if kind.startswith(JSON):
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return decoded if isinstance(decoded, dict) else None
    if kind.startswith(FORM):
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return None
    return None


def make(section: AuthenticationSection, reactor: Any, data_dir: Path) -> HttpAuthenticator:
    """The ``http`` backend; ``BackendConfigError`` when its settings cannot be used."""
    return HttpAuthenticator(section, reactor)

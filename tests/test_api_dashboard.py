"""The dashboard's files: served at ``/`` by the API's site without authentication, with their types
and the security headers; nothing in them is fetched from elsewhere and no script is inline (the
Content-Security-Policy allows only 'self')."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, succeed
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from ocppgw.api.admins import AdminStore
from ocppgw.api.auth import ApiAuth
from ocppgw.api.server import DASHBOARD_DIR, make_site

FILES = {
    "index.html": "text/html",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
    "api.js": "text/javascript",
    "ui.js": "text/javascript",
    "app.js": "text/javascript",
    "gateway.js": "text/javascript",
    "clients.js": "text/javascript",
    "listeners.js": "text/javascript",
    "authn.js": "text/javascript",
}
_URL = re.compile(r"\b(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_SVG_NAMESPACE = "http://www.w3.org/2000/svg"


class DashboardFilesTests(TestCase):
    """The files as the package holds them."""

    def test_every_file_listed(self) -> None:
        """The directory holds exactly the files this test knows (a new one gets checked here too)."""
        self.assertEqual(sorted(p.name for p in DASHBOARD_DIR.iterdir()), sorted(FILES))

    def test_no_external_urls(self) -> None:
        """No file names another host: nothing is fetched at run time (the SVG namespace is a name)."""
        for name in FILES:
            text = (DASHBOARD_DIR / name).read_text(encoding="utf-8").replace(_SVG_NAMESPACE, "")
            self.assertEqual(_URL.findall(text), [], name)

    def test_no_inline_script_or_style(self) -> None:
        """index.html loads its script and style as files and has no inline handlers or styles,
        which the Content-Security-Policy would block."""
        html = (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
        found = [(attrs, body.strip()) for attrs, body in scripts]
        self.assertEqual(found, [(' type="module" src="app.js"', "")])
        self.assertNotRegex(html, r"<style|\sstyle=|\son[a-z]+=")

    def test_scripts_short(self) -> None:
        """Each script stays under 450 lines, as every module of the project."""
        for name in FILES:
            if name.endswith(".js"):
                lines = (DASHBOARD_DIR / name).read_text(encoding="utf-8").count("\n")
                self.assertLess(lines, 450, name)


class DashboardServedTests(TestCase):
    """The files through real HTTP from the API's site."""

    def setUp(self) -> None:
        store = AdminStore(Path(tempfile.mkdtemp(prefix="ocppgw-dash-")))
        auth = ApiAuth(store, reactor, 60.0, 3, None, blocking=lambda f, *a: succeed(f(*a)))
        port = reactor.listenTCP(0, make_site([], [], auth), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)

    @inlineCallbacks
    def fetch(self, path: str) -> Any:
        response = yield treq.get(self.base + path, pool=self.pool)
        body = yield response.content()
        return response, body

    @inlineCallbacks
    def test_root_is_index(self) -> Any:
        """``/`` answers index.html without credentials, with the CSP and the other headers."""
        response, body = yield self.fetch("/")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, (DASHBOARD_DIR / "index.html").read_bytes())
        headers = response.headers
        csp = headers.getRawHeaders("content-security-policy")[0]
        self.assertIn("default-src 'self'", csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertEqual(headers.getRawHeaders("x-frame-options"), ["DENY"])
        self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])

    @inlineCallbacks
    def test_assets_with_their_types(self) -> Any:
        """Every file is served at the root with its type (a module script needs a JavaScript type
        under nosniff) and the security headers."""
        for name, kind in FILES.items():
            response, body = yield self.fetch(f"/{name}")
            self.assertEqual(response.code, 200, name)
            self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith(kind), name)
            self.assertEqual(body, (DASHBOARD_DIR / name).read_bytes(), name)
            self.assertEqual(response.headers.getRawHeaders("x-frame-options"), ["DENY"], name)

    @inlineCallbacks
    def test_other_paths_still_api(self) -> Any:
        """A path that is no file is the API's JSON 404, not a directory listing or an HTML page."""
        for path in ("/nothing.js", "/api/v5/nothing"):
            response, body = yield self.fetch(path)
            self.assertEqual(response.code, 404, path)
            self.assertIn(b'"RESOURCE_NOT_FOUND"', body, path)

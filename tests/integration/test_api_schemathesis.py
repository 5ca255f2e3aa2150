"""schemathesis against the live API and its own ``/api-docs/swagger.json``: no 500s, and every
status answered is one the document lists (bounded examples, a fixed seed)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue

from tests.integration.test_api_core import ApiTestCase


class SchemathesisTests(ApiTestCase):
    timeout = 300

    @inlineCallbacks
    def test_document_holds(self) -> Any:
        """``st run`` with the not_a_server_error and status_code_conformance checks passes."""
        status, document, _ = yield self.answer("GET", "/api-docs/swagger.json", self.admin)
        self.assertEqual(status, 200)
        schema = self.data_dir / "swagger.json"
        schema.write_text(json.dumps(document), encoding="utf-8")
        st = os.path.join(os.path.dirname(sys.executable), "st")
        auth = f"Authorization: {self.admin['Authorization']}"
        checks = "not_a_server_error,status_code_conformance"
        argv = ["run", str(schema), "--url", self.gw.api_url, "-H", auth, "--checks", checks]
        argv += ["--max-examples", "10", "--seed", "11", "--no-color"]
        out, err, code = yield getProcessOutputAndValue(st, argv, env=dict(os.environ))
        text = (out + err).decode("utf-8", "replace")
        self.assertEqual(code, 0, text[-4000:])
        self.assertIn("/api/v5/gateways/ocpp/clients/{clientid}", text)  # it did run the operations

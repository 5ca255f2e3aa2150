"""Security profile 2 end to end: the `ocpp` package's ChargePoint over wss (server certificate from
the dev PKI, no client certificate) with HTTP Basic credentials, checked by the built-in database."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from tests.devpki import client_context
from tests.integration.harness import WssTestCase, basic_auth
from tests.integration.test_authentication import heartbeat, users

PASSWORD = "profile-2 password"


class SecurityProfile2Tests(WssTestCase):
    """wss + Basic auth; users kept with bcrypt (the reference's $2a$ format) by the real CLI."""

    extra_config = (
        "[gateway]\ndata_dir = {data_dir}\n[authentication]\nbackend = built_in_database\n"
        "user_id_type = clientid\npassword_hash_algorithm = bcrypt\nsalt_rounds = 10\n"
    )

    def connect(self, cid: str, password: str, ocpp_client: bool = True) -> Deferred[Any]:
        context = client_context(self.pki.ca_cert)
        headers = basic_auth(cid, password)
        return self.gw.connect(
            cid, ocpp_client=ocpp_client, url=self.url(cid), ssl=context, additional_headers=headers
        )

    @inlineCallbacks
    def test_right_password_in(self) -> Generator[Deferred[Any], Any, None]:
        """The right password over wss: in; BootNotification and a Heartbeat round-trip through MQTT."""
        yield users(self, self.gw, "add", "CP1", "--password", PASSWORD)
        client = yield self.connect("CP1", PASSWORD)
        result = yield self.gw.boot(client, "CP1")
        self.assertEqual(result.status, "Accepted")
        yield heartbeat(self.gw, client, "CP1")

    @inlineCallbacks
    def test_wrong_password_401(self) -> Generator[Deferred[Any], Any, None]:
        """A wrong password over wss: 401 bad_username_or_password with the Basic challenge, nothing
        published for it; a charge point that is not a user: 401 not_authorized."""
        yield users(self, self.gw, "add", "CP1", "--password", PASSWORD)
        context = client_context(self.pki.ca_cert)
        for cid, password, reason in (
            ("CP1", "wrong", b"bad_username_or_password"),
            ("CP2", PASSWORD, b"not_authorized"),
        ):
            status, headers, body = yield self.gw.refused(
                cid, url=self.url(cid), ssl=context, additional_headers=basic_auth(cid, password)
            )
            self.assertEqual((status, body), (401, reason))
            self.assertEqual(headers["www-authenticate"], 'Basic realm="ocppgw"')
        self.assertEqual(self.gw.messages("ocpp/cp/CP1/Presence"), [])

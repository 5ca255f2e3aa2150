"""Sans-IO handshake checks: the charge point id from the path, the subprotocol, Basic auth."""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.ws.handshake import SUBPROTOCOL, Refusal, basic_credentials, cid_from_path, pick_subprotocol


def _basic(raw: bytes, scheme: str = "Basic") -> str:
    return f"{scheme} {base64.b64encode(raw).decode('ascii')}"


class CidFromPathTests(SynchronousTestCase):
    """cid_from_path() reads the percent-decoded id after the listener's path."""

    def assertRefused(self, path: str, status: int, reason: str, prefix: str = "/ocpp") -> None:
        refusal = self.assertRaises(Refusal, cid_from_path, path, prefix)
        self.assertEqual((refusal.status, refusal.reason), (status, reason), path)

    def test_plain(self) -> None:
        """The id is the path after the listener's path and a slash."""
        self.assertEqual(cid_from_path("/ocpp/CP1", "/ocpp"), "CP1")

    def test_prefix_with_trailing_slash(self) -> None:
        """A configured path ending in a slash works the same."""
        self.assertEqual(cid_from_path("/ocpp/CP1", "/ocpp/"), "CP1")

    def test_nested_prefix(self) -> None:
        """A deeper listener path works."""
        self.assertEqual(cid_from_path("/a/b/ocpp/CP-7", "/a/b/ocpp"), "CP-7")

    def test_root_prefix(self) -> None:
        """A listener on ``/`` takes the whole path as the id."""
        self.assertEqual(cid_from_path("/CP1", "/"), "CP1")
        self.assertEqual(cid_from_path("/CP1", ""), "CP1")

    def test_percent_decoding(self) -> None:
        """Percent escapes are decoded, UTF-8 sequences included."""
        self.assertEqual(cid_from_path("/ocpp/CP%201", "/ocpp"), "CP 1")
        self.assertEqual(cid_from_path("/ocpp/S%C3%A4ule", "/ocpp"), "Säule")
        self.assertEqual(cid_from_path("/ocpp/%F0%9F%98%80", "/ocpp"), "😀")
        self.assertEqual(cid_from_path("/ocpp/a%25b", "/ocpp"), "a%b")

    def test_raw_unicode(self) -> None:
        """An undecoded non-ASCII path is accepted as it is."""
        self.assertEqual(cid_from_path("/ocpp/Säule", "/ocpp"), "Säule")

    def test_lone_percent(self) -> None:
        """A percent sign that starts no escape is kept."""
        self.assertEqual(cid_from_path("/ocpp/CP%", "/ocpp"), "CP%")
        self.assertEqual(cid_from_path("/ocpp/CP%zz", "/ocpp"), "CP%zz")

    def test_plus_is_not_space(self) -> None:
        """``+`` is not form-decoded to a space: it stays ``+`` and is refused."""
        self.assertRefused("/ocpp/a+b", 400, "unsupported_clientid")

    def test_topic_characters_after_decoding(self) -> None:
        """Escaped ``/``, ``+``, ``#`` (either case) are refused after decoding."""
        for escaped in ("%2F", "%2f", "%2B", "%2b", "%23"):
            self.assertRefused(f"/ocpp/CP{escaped}1", 400, "unsupported_clientid")

    def test_raw_slash(self) -> None:
        """A path below the id is refused."""
        self.assertRefused("/ocpp/CP1/extra", 400, "unsupported_clientid")

    def test_nul_and_controls(self) -> None:
        """Escaped NUL and control characters are refused."""
        for escaped in ("%00", "%0A", "%1F", "%7F", "%C2%85"):
            self.assertRefused(f"/ocpp/CP{escaped}", 400, "unsupported_clientid")

    def test_invalid_utf8(self) -> None:
        """Escapes that are not UTF-8 are refused with 400."""
        for escaped in ("%FF", "%C3", "%C3%28", "%ED%A0%80"):
            self.assertRefused(f"/ocpp/CP{escaped}", 400, "unsupported_clientid")

    def test_empty(self) -> None:
        """Nothing after the listener's path is an empty id: 400."""
        self.assertRefused("/ocpp/", 400, "clientid_cannot_be_empty")

    def test_too_long(self) -> None:
        """More than 256 bytes after decoding is refused; 256 is fine."""
        self.assertEqual(cid_from_path("/ocpp/" + "%C3%A9" * 128, "/ocpp"), "é" * 128)
        self.assertRefused("/ocpp/" + "%C3%A9" * 129, 400, "clientid_too_long")
        self.assertRefused("/ocpp/" + "a" * 257, 400, "clientid_too_long")

    def test_wrong_prefix(self) -> None:
        """A path outside the listener's path is 404."""
        for path in ("/other/CP1", "/ocppX/CP1", "/OCPP/CP1", "/ocpp", "/", "", "ocpp/CP1"):
            self.assertRefused(path, 404, "not_found")

    def test_refusal(self) -> None:
        """Refusal carries the HTTP status and reason."""
        refusal = Refusal(400, "why")
        self.assertEqual((refusal.status, refusal.reason, refusal.args), (400, "why", (400, "why")))


class PickSubprotocolTests(SynchronousTestCase):
    """pick_subprotocol() chooses from the listener's supported subprotocols."""

    def test_only_ocpp16(self) -> None:
        """``ocpp1.6`` alone is chosen."""
        self.assertEqual(SUBPROTOCOL, "ocpp1.6")
        self.assertEqual(pick_subprotocol(["ocpp1.6"]), "ocpp1.6")

    def test_among_others(self) -> None:
        """``ocpp1.6`` is chosen wherever it appears in the offer."""
        self.assertEqual(pick_subprotocol(["ocpp2.0.1", "ocpp1.6"]), "ocpp1.6")
        self.assertEqual(pick_subprotocol(["ocpp1.6", "ocpp2.0"]), "ocpp1.6")

    def test_none_offered(self) -> None:
        """No Sec-WebSocket-Protocol is served as OCPP 1.6 with none named (None), as the reference."""
        self.assertIsNone(pick_subprotocol([]))
        self.assertIsNone(pick_subprotocol([], ("ocpp1.6",), fail_if_none=False))

    def test_none_offered_refused_when_configured(self) -> None:
        """With fail_if_no_subprotocol, no Sec-WebSocket-Protocol is refused with 400 no_subprotocol."""
        refusal = self.assertRaises(Refusal, pick_subprotocol, [], ("ocpp1.6",), True)
        self.assertEqual((refusal.status, refusal.reason), (400, "no_subprotocol"))

    def test_supported_order_wins(self) -> None:
        """The first of the listener's supported subprotocols that is offered is chosen."""
        self.assertEqual(pick_subprotocol(["b", "a"], ("a", "b")), "a")
        refusal = self.assertRaises(Refusal, pick_subprotocol, ["ocpp1.6"], ("a",))
        self.assertEqual(refusal.reason, "no_supported_subprotocol")

    def test_others_only(self) -> None:
        """Only other protocols, or a different spelling, are refused with 400."""
        for offered in (["ocpp2.0"], ["ocpp2.0.1", "ocpp1.5"], ["OCPP1.6"], ["ocpp1.6 "], ["ocpp16"]):
            refusal = self.assertRaises(Refusal, pick_subprotocol, offered)
            self.assertEqual((refusal.status, refusal.reason), (400, "no_supported_subprotocol"), offered)


class BasicCredentialsTests(SynchronousTestCase):
    """basic_credentials() parses Basic auth; the password stays bytes."""

    def test_plain(self) -> None:
        """A username and password are split at the first colon."""
        self.assertEqual(basic_credentials(_basic(b"CP1:secret")), ("CP1", b"secret"))

    def test_password_is_bytes(self) -> None:
        """The password is returned as bytes, even when it is ASCII."""
        _, password = basic_credentials(_basic(b"CP1:pw"))
        self.assertIsInstance(password, bytes)

    def test_password_with_colon(self) -> None:
        """Colons after the first belong to the password."""
        self.assertEqual(basic_credentials(_basic(b"CP1:a:b:c")), ("CP1", b"a:b:c"))

    def test_non_utf8_password(self) -> None:
        """A password that is not UTF-8 (an OCPP AuthorizationKey may be raw bytes) is kept byte for byte."""
        raw = bytes(range(256))
        self.assertEqual(basic_credentials(_basic(b"CP1:" + raw)), ("CP1", raw))
        self.assertEqual(basic_credentials(_basic(b"CP1:\xff\xfe\x00")), ("CP1", b"\xff\xfe\x00"))

    def test_empty_password(self) -> None:
        """An empty password is the empty byte string."""
        self.assertEqual(basic_credentials(_basic(b"CP1:")), ("CP1", b""))

    def test_empty_username(self) -> None:
        """An empty username is the empty string."""
        self.assertEqual(basic_credentials(_basic(b":pw")), ("", b"pw"))

    def test_unicode_username(self) -> None:
        """A UTF-8 username is decoded."""
        self.assertEqual(basic_credentials(_basic("Säule:pw".encode())), ("Säule", b"pw"))

    def test_username_with_colon_equal_to_identity(self) -> None:
        """A username holding ``:`` is kept whole when it is the charge point's identity."""
        header = _basic(b"CP:1:secret")
        self.assertEqual(basic_credentials(header, "CP:1"), ("CP:1", b"secret"))
        self.assertEqual(basic_credentials(header), ("CP", b"1:secret"))
        self.assertEqual(basic_credentials(header, "CP:2"), ("CP", b"1:secret"))

    def test_unicode_identity(self) -> None:
        """The identity is compared in UTF-8."""
        self.assertEqual(basic_credentials(_basic("Sä:ule:\xff".encode("latin-1")), "x"), (None, None))
        self.assertEqual(basic_credentials(_basic("Sä:ule:pw".encode()), "Sä:ule"), ("Sä:ule", b"pw"))

    def test_identity_prefix_only(self) -> None:
        """The identity must be followed by a colon to be taken as the username."""
        self.assertEqual(basic_credentials(_basic(b"CP1x:pw"), "CP1"), ("CP1x", b"pw"))

    def test_scheme_case_insensitive(self) -> None:
        """``basic`` and ``BASIC`` work like ``Basic``; surrounding space is ignored."""
        for scheme in ("basic", "BASIC", "bAsIc"):
            self.assertEqual(basic_credentials(_basic(b"u:p", scheme)), ("u", b"p"))
        encoded = base64.b64encode(b"u:p").decode()
        self.assertEqual(basic_credentials(f"  Basic   {encoded}  "), ("u", b"p"))

    def test_missing(self) -> None:
        """No header gives (None, None)."""
        self.assertEqual(basic_credentials(None), (None, None))
        self.assertEqual(basic_credentials(""), (None, None))

    def test_other_schemes(self) -> None:
        """Bearer, Digest and unknown schemes give (None, None)."""
        for header in ("Bearer abc.def", "Digest username=u", _basic(b"u:p", "Basix"), "Basic:" + "x"):
            self.assertEqual(basic_credentials(header), (None, None), header)

    def test_malformed(self) -> None:
        """Bad base64, no colon, nothing encoded or a non-UTF-8 username give (None, None)."""
        for header in (
            "Basic",
            "Basic ",
            "Basic !!!!",
            "Basic dXNlcjpwYXM",  # bad padding
            "Basic dXNl cjpw",  # space inside
            _basic(b"nocolon"),
            _basic(b""),
            _basic(b"\xff\xfe:pw"),
        ):
            self.assertEqual(basic_credentials(header), (None, None), header)

"""``ocppgw.tls.pem``: the PEM loaders the wss listeners and the broker connection share."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.tls.pem import (
    TlsConfigError,
    load_certificates,
    load_key_pair,
    load_private_key,
    public_key_der,
    read_file,
)
from tests.devpki import make_dev_certs

PASSWORD = "pem pass"


class LoaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pki = make_dev_certs(self.mktemp(), ["CP1"], intermediate=True, key_password=PASSWORD)
        self.base = self.pki.directory
        self.junk = self.base / "junk.pem"
        self.junk.write_text("hello\n")

    def reason(self, key: str, call: object, *args: object) -> str:
        """The reason of the ``TlsConfigError`` that ``call(*args)`` raises, once its key is ``key``."""
        error = self.assertRaises(TlsConfigError, call, *args)
        self.assertEqual(error.key, key)
        self.assertEqual(str(error), error.reason)
        return error.reason

    def test_read_file(self) -> None:
        self.assertEqual(read_file(self.junk, "certfile"), b"hello\n")
        missing = self.base / "missing.pem"
        self.assertEqual(
            self.reason("cacertfile", read_file, missing, "cacertfile"),
            f"cannot read {missing}: No such file or directory",
        )

    def test_certificates_in_file_order(self) -> None:
        """A chain file gives every certificate, the leaf first."""
        chain = load_certificates(self.base / "CP1-chain.pem", "certfile")
        self.assertEqual(
            [c.subject.rfc4514_string() for c in chain],
            [
                x509.load_pem_x509_certificate(path.read_bytes()).subject.rfc4514_string()
                for path in (self.base / "CP1.pem", self.base / "intermediate.pem")
            ],
        )

    def test_no_certificate(self) -> None:
        for path in (self.junk, self.base / "CP1.key"):
            reason = self.reason("certfile", load_certificates, path, "certfile")
            self.assertEqual(reason, f"no PEM certificate in {path}")

    def test_keys(self) -> None:
        """A plain key without a password, an encrypted one with its password."""
        plain = load_private_key(self.base / "server.key", None)
        encrypted = load_private_key(self.base / "server-encrypted.key", PASSWORD)
        self.assertEqual(public_key_der(plain.public_key()), public_key_der(encrypted.public_key()))

    def test_key_problems(self) -> None:
        """Each key mistake is one reason under ``keyfile``, naming the section's password key."""
        encrypted = self.base / "server-encrypted.key"
        plain = self.base / "server.key"
        cases: list[tuple[tuple[object, ...], str]] = [
            ((encrypted, None), f"{encrypted} is encrypted: set password"),
            ((encrypted, None, "keyfile_password"), f"{encrypted} is encrypted: set keyfile_password"),
            ((plain, "pw", "keyfile_password"), f"{plain} is not encrypted: remove keyfile_password"),
            ((encrypted, "not it"), f"cannot decrypt {encrypted}: wrong password"),
            ((self.junk, None), f"no usable PEM private key in {self.junk}"),
            ((self.base / "server.pem", None), f"no usable PEM private key in {self.base / 'server.pem'}"),
        ]
        for args, reason in cases:
            with self.subTest(args=args):
                self.assertEqual(self.reason("keyfile", load_private_key, *args), reason)

    def test_public_key_der(self) -> None:
        """A key and its certificate give the same bytes; another key does not."""
        key: PrivateKeyTypes = load_private_key(self.base / "server.key", None)
        (certificate,) = load_certificates(self.base / "server.pem", "certfile")
        other = load_private_key(self.base / "CP1.key", None)
        self.assertEqual(public_key_der(key.public_key()), public_key_der(certificate.public_key()))
        self.assertNotEqual(public_key_der(other.public_key()), public_key_der(certificate.public_key()))

    def test_key_pair(self) -> None:
        pair = load_key_pair(self.base / "CP1-chain.pem", self.base / "CP1.key", None)
        self.assertEqual(len(pair.chain), 2)
        self.assertEqual(public_key_der(pair.key.public_key()), public_key_der(pair.chain[0].public_key()))

    def test_key_pair_mismatch(self) -> None:
        """A key that belongs to another certificate is refused, naming both files."""
        certfile, keyfile = self.base / "server.pem", self.base / "CP1.key"
        self.assertEqual(
            self.reason("keyfile", load_key_pair, certfile, keyfile, None),
            f"the key in {keyfile} does not match the certificate in {certfile}",
        )

    def test_key_pair_reads_the_certificate_first(self) -> None:
        """Both files bad: the certificate file is named (as the config lists it first)."""
        self.reason("certfile", load_key_pair, self.junk, self.junk, None)
        self.assertIn(
            "set keyfile_password",
            self.reason(
                "keyfile",
                load_key_pair,
                self.base / "server.pem",
                self.base / "server-encrypted.key",
                None,
                "keyfile_password",
            ),
        )

"""Development certificates for wss listeners: a CA, a server certificate and charge-point certificates.

    python certs/make_dev_certs.py CP1 CP2                 # into certs/dev/
    python certs/make_dev_certs.py --out /tmp/pki --intermediate --key-password s3cret CP1

Writes, in the output directory (certs/dev/ by default, which git ignores):

- ``ca.pem``, ``ca.key``: a self-signed root CA ("ocppgw development CA").
- ``intermediate.pem``, ``intermediate.key`` (with ``--intermediate``): a CA signed by the root;
  the charge-point certificates are then signed by it, and each ``<cid>-chain.pem`` holds the
  client certificate followed by the intermediate, ready for a client to present.
- ``server.pem``, ``server.key``: the server certificate (SAN localhost and 127.0.0.1, plus any
  ``--server-name``), signed by the root CA.
- ``server-encrypted.key`` (with ``--key-password``): the same server key, encrypted with that
  password.
- ``<cid>.pem``, ``<cid>.key``: one client certificate per charge point id, with CN = the cid.

These keys are for development and tests only: they are made fresh on every run and must never
be committed or deployed.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DIRECTORY = Path(__file__).resolve().parent / "dev"
ORGANIZATION = "ocppgw development"


@dataclass
class DevCerts:
    """Where ``make_dev_certs`` wrote each file."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    intermediate_cert: Path | None = None
    intermediate_key: Path | None = None
    server_key_encrypted: Path | None = None
    client_certs: dict[str, Path] = field(default_factory=dict)
    client_keys: dict[str, Path] = field(default_factory=dict)
    client_chains: dict[str, Path] = field(default_factory=dict)
    """Per cid, the client certificate followed by the intermediate (only with an intermediate)."""


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    days: int,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def make_dev_certs(
    directory: str | Path = DEFAULT_DIRECTORY,
    cids: Sequence[str] = (),
    *,
    intermediate: bool = False,
    key_password: str | bytes | None = None,
    server_names: Sequence[str] = (),
    days: int = 30,
    ca_name: str = "ocppgw development CA",
) -> DevCerts:
    """Make a development PKI in ``directory`` (created if needed) and return where each file went.

    ``cids`` get client certificates with CN = cid; ``intermediate`` signs them with an
    intermediate CA; ``key_password`` also writes the server key encrypted with it.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_subject = _name(ca_name)
    ca_cert = _certificate(ca_subject, ca_key, ca_subject, ca_key, ca=True, days=days)
    made = DevCerts(
        directory=out,
        ca_cert=_write(out / "ca.pem", _pem(ca_cert)),
        ca_key=_write(out / "ca.key", _key_pem(ca_key), private=True),
        server_cert=out / "server.pem",
        server_key=out / "server.key",
    )

    client_issuer, client_issuer_key = ca_subject, ca_key
    chain_tail = b""
    if intermediate:
        int_key = _key()
        int_subject = _name(f"{ca_name} intermediate")
        int_cert = _certificate(int_subject, int_key, ca_subject, ca_key, ca=True, days=days)
        made.intermediate_cert = _write(out / "intermediate.pem", _pem(int_cert))
        made.intermediate_key = _write(out / "intermediate.key", _key_pem(int_key), private=True)
        client_issuer, client_issuer_key = int_subject, int_key
        chain_tail = _pem(int_cert)

    alt_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for name in server_names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    server_key = _key()
    server_cert = _certificate(
        _name("localhost"),
        server_key,
        ca_subject,
        ca_key,
        ca=False,
        days=days,
        extensions=[
            (x509.SubjectAlternativeName(alt_names), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
    )
    _write(made.server_cert, _pem(server_cert))
    _write(made.server_key, _key_pem(server_key), private=True)
    if key_password:
        password = key_password.encode("utf-8") if isinstance(key_password, str) else key_password
        made.server_key_encrypted = _write(
            out / "server-encrypted.key", _key_pem(server_key, password), private=True
        )

    for cid in cids:
        if not cid or "/" in cid or cid.startswith("."):
            raise ValueError(f"not usable as a file name: {cid!r}")
        client_key = _key()
        client_cert = _certificate(
            _name(cid),
            client_key,
            client_issuer,
            client_issuer_key,
            ca=False,
            days=days,
            extensions=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)],
        )
        made.client_certs[cid] = _write(out / f"{cid}.pem", _pem(client_cert))
        made.client_keys[cid] = _write(out / f"{cid}.key", _key_pem(client_key), private=True)
        if chain_tail:
            made.client_chains[cid] = _write(out / f"{cid}-chain.pem", _pem(client_cert) + chain_tail)
    return made


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make development TLS certificates for ocppgw.")
    parser.add_argument(
        "cids", nargs="*", metavar="CID", help="charge point ids: one client certificate each"
    )
    parser.add_argument("--out", default=str(DEFAULT_DIRECTORY), help="output directory (default certs/dev/)")
    parser.add_argument(
        "--intermediate", action="store_true", help="sign client certificates with an intermediate CA"
    )
    parser.add_argument(
        "--key-password", help="also write server-encrypted.key, encrypted with this password"
    )
    parser.add_argument(
        "--server-name",
        action="append",
        default=[],
        help="an extra DNS name or IP for the server certificate",
    )
    parser.add_argument("--days", type=int, default=30, help="validity in days (default 30)")
    args = parser.parse_args(argv)
    made = make_dev_certs(
        args.out,
        args.cids,
        intermediate=args.intermediate,
        key_password=args.key_password,
        server_names=args.server_name,
        days=args.days,
    )
    for path in sorted(p for p in made.directory.iterdir() if p.is_file()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

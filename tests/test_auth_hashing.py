"""Tests for ocppgw.auth.hashing: the reference's test vectors (Part A.9) and its storage formats."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.auth.hashing import HashingError, HashSettings, check, generate, new_salt

SHA512_SUFFIX = (
    "fa6a2185b3e0a9a85ef41ffb67ef3c1fb6f74980f8ebf970e4e72e353ed9537d"
    "593083c201dfd6e43e1c8a7aac2bc8dbb119c7dfb7d4b8f131111395bd70e97f"
)
PBKDF2_32 = "01dbee7f4a9e243e988b62c73cda935da05378b93244ec8f48a99e61ad799d86"
OUR_SALT = "e378187547bf2d6f0545a3f441aa4d8a"

# (row, settings, password, salt, stored hash): every row of A.9, then the reference's own fixtures
VECTORS: list[tuple[str, HashSettings, bytes, Any, str]] = [
    ("1", HashSettings("plain", "suffix"), b"plain", "salt", "plainsalt"),
    ("2", HashSettings("plain", "prefix"), b"password", "salt", "saltpassword"),
    ("3", HashSettings("plain", "disable"), b"password", "", "password"),
    ("4", HashSettings("md5", "disable"), b"md5", "salt", "1bc29b36f623ba82aaf6724fd3b16718"),
    ("5", HashSettings("md5", "prefix"), b"password", "salt", "67a1e09bb1f83f5007dc119c14d663aa"),
    ("6", HashSettings("md5", "suffix"), b"md5", "salt", "9b4d0c43d206d48279e69b9ad7132e22"),
    ("7", HashSettings("md5", "disable"), b"password", None, "5f4dcc3b5aa765d61d8327deb882cf99"),
    ("8", HashSettings("sha", "prefix"), b"sha", "salt", "c665d4c0a9e5498806b7d9fd0b417d272853660e"),
    ("9", HashSettings("sha", "prefix"), b"password", "salt", "59b3e8d637cf97edbe2384cf59cb7453dfe30789"),
    ("10", HashSettings("sha", "disable"), b"password", None, "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"),
    (
        "11", HashSettings("sha256", "prefix"), b"sha256", "salt",
        "ac63a624e7074776d677dd61a003b8c803eb11db004d0ec6ae032a5d7c9c5caf",
    ),
    (
        "12", HashSettings("sha256", "suffix"), b"password", "salt",
        "7a37b85c8918eac19a9089c0fa5a2ab4dce3f90528dcdeec108b23ddf3607b99",
    ),
    (
        "13", HashSettings("sha256", "disable"), b"sha256_no_salt", None,
        "a3c7f6b085c3e5897ffb9b86f18a9d905063f8550a74444b5892e193c1b50428",
    ),
    (
        "14", HashSettings("sha256", "disable"), b"password", None,
        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
    ),
    (
        "15", HashSettings("sha512", "prefix"), b"sha512", "salt",
        "a1509ab67bfacbad020927b5ac9d91e9100a82e33a0ebb01459367ce921c0aa8157aa5652f94bc84fa3babc08283e44887d61c48bcf8ad7bcb3259ee7d0eafcd",
    ),
    ("16", HashSettings("sha512", "suffix"), b"password", "salt", SHA512_SUFFIX),
    ("16 upper", HashSettings("sha512", "suffix"), b"password", "salt", SHA512_SUFFIX.upper()),
    (
        "17", HashSettings("sha512", "disable"), b"password", None,
        "b109f3bbbc244eb82441917ed06d618b9008dd09b3befd1b5e07394c706a8bb980b1d7785e5976ec049b46df5f1326af5a2ea6d103fd07c95385ffab0cacbc86",
    ),
    (
        "18", HashSettings("bcrypt"), b"bcrypt", "$2b$12$wtY3h20mUjjmeaClpqZVve",
        "$2b$12$wtY3h20mUjjmeaClpqZVveDWGlHzCGsvuThMlneGHA7wVeFYyns2u",
    ),
    (
        "19", HashSettings("bcrypt"), b"password", "$2b$12$wtY3h20mUjjmeaClpqZVve",
        "$2b$12$wtY3h20mUjjmeaClpqZVvehyw7F.V78F3rbK2xDkCzRTMi6pmfUB6",
    ),
    (
        "20", HashSettings("pbkdf2", mac_fun="sha", iterations=2, dk_length=32), b"password",
        "ATHENA.MIT.EDUraeburn", PBKDF2_32,
    ),
    (
        "20 upper", HashSettings("pbkdf2", mac_fun="sha", iterations=2, dk_length=32), b"password",
        "ATHENA.MIT.EDUraeburn", PBKDF2_32.upper(),
    ),
    (
        "21", HashSettings("pbkdf2", mac_fun="sha", iterations=2), b"password", "ATHENA.MIT.EDUraeburn",
        "01dbee7f4a9e243e988b62c73cda935da05378b9",
    ),
    (
        "ours sha256 suffix", HashSettings("sha256", "suffix"), b"secret123", OUR_SALT,
        "59168fbe058b89d124b99700a419c0c57fe43116f91f5202a98902a77eb5a40e",
    ),
    (
        "ours sha256 prefix", HashSettings("sha256", "prefix"), b"secret123", OUR_SALT,
        "f0d44c99c11827373a881ca54b5587f4b1164a14bef2c08d91a19519fd60eeca",
    ),
    (
        "ours pbkdf2", HashSettings("pbkdf2", mac_fun="sha256", iterations=1000), b"secret123", OUR_SALT,
        "1484a8ba805afc05266c89ecf9ffc8e368bf188f6b0c08e595292f892e045349",
    ),
    (
        "ours bcrypt", HashSettings("bcrypt"), b"secret123", "",
        "$2a$10$wtY3h20mUjjmeaClpqZVveAmfiu5/GCsgYcyWhOL6l61p7VKJhZcC",
    ),
]  # fmt: skip


class VectorTests(SynchronousTestCase):
    def test_every_vector_verifies(self) -> None:
        """Each row of A.9 (and the upper-case forms of the hex ones) matches its password."""
        for row, settings, password, salt, stored in VECTORS:
            self.assertTrue(check(settings, stored, salt, password), f"row {row}")

    def test_wrong_password_fails_every_vector(self) -> None:
        """``wrongpass`` matches no row."""
        for row, settings, _password, salt, stored in VECTORS:
            self.assertFalse(check(settings, stored, salt, b"wrongpass"), f"row {row}")

    def test_no_password_never_matches(self) -> None:
        """``check_pass(_, _, undefined)`` is false, for every row."""
        for row, settings, _password, salt, stored in VECTORS:
            self.assertFalse(check(settings, stored, salt, None), f"row {row}")

    def test_plain_is_case_sensitive(self) -> None:
        """Row 3: ``PASSWORD`` is not ``password``, and a plain stored value is not lower-cased."""
        self.assertFalse(check(HashSettings("plain", "disable"), "password", "", b"PASSWORD"))
        self.assertFalse(check(HashSettings("plain", "disable"), "PASSWORD", "", b"password"))

    def test_bytes_from_a_driver(self) -> None:
        """A hash and salt a database driver returns as bytes check as the same text would."""
        self.assertTrue(
            check(HashSettings("sha256", "suffix"), VECTORS[11][4].encode(), b"salt", b"password")
        )

    def test_bcrypt_bad_hash_is_an_error(self) -> None:
        """bcrypt with ``salt`` as the stored hash cannot be checked: an error, not a wrong password."""
        for stored in (
            "salt",
            "$2b$12$short",
            "$2c$12$wtY3h20mUjjmeaClpqZVvehyw7F.V78F3rbK2xDkCzRTMi6pmfUB6",
        ):
            self.assertRaises(HashingError, check, HashSettings("bcrypt"), stored, "salt", b"password")

    def test_bcrypt_2y_accepted(self) -> None:
        """A ``$2y$`` hash (PHP's) verifies like the ``$2a$`` hash of the same salt."""
        settings = HashSettings("bcrypt", salt_rounds=5)
        stored, _salt = generate(settings, b"pw")
        self.assertTrue(check(settings, "$2y$" + stored[4:], None, b"pw"))
        self.assertTrue(check(settings, "$2b$" + stored[4:], None, b"pw"))

    def test_pbkdf2_dk_length_too_large(self) -> None:
        """pbkdf2 with dk_length 2^32 raises an error."""
        settings = HashSettings("pbkdf2", mac_fun="sha", iterations=2, dk_length=2**32)
        self.assertRaises(HashingError, check, settings, PBKDF2_32, "ATHENA.MIT.EDUraeburn", b"password")

    def test_pbkdf2_unsupported_mac(self) -> None:
        """md4, md5 and ripemd160 are refused (the reference crashes on them)."""
        for mac in ("md4", "md5", "ripemd160"):
            settings = HashSettings("pbkdf2", mac_fun=mac, iterations=2)
            self.assertRaises(HashingError, check, settings, PBKDF2_32, "s", b"password")

    def test_non_text_salt_is_an_error(self) -> None:
        """A NULL (or numeric) salt with prefix or suffix, or for pbkdf2, is a backend failure; with
        ``disable`` the salt is not looked at."""
        for salt in (None, 5):
            for position in ("prefix", "suffix"):
                settings = HashSettings("sha256", position)
                self.assertRaises(HashingError, check, settings, "00", salt, b"password")
            pbkdf2 = HashSettings("pbkdf2", mac_fun="sha", iterations=2)
            self.assertRaises(HashingError, check, pbkdf2, PBKDF2_32, salt, b"password")
        self.assertTrue(check(HashSettings("md5", "disable"), VECTORS[6][4], None, b"password"))

    def test_non_text_hash_is_an_error(self) -> None:
        """A NULL stored hash cannot be checked."""
        self.assertRaises(HashingError, check, HashSettings("sha256"), None, "salt", b"password")

    def test_not_utf8_password(self) -> None:
        """A Basic-auth password that is not UTF-8 is hashed as the bytes it is."""
        settings = HashSettings("sha256", "suffix")
        stored, salt = generate(settings, b"\xff\xfe")
        self.assertTrue(check(settings, stored, salt, b"\xff\xfe"))
        self.assertFalse(check(settings, stored, salt, b"\xff"))


class GenerateTests(SynchronousTestCase):
    def test_salt_format(self) -> None:
        """A generated salt is 32 lowercase hex characters, fresh each time."""
        salts = {new_salt() for _ in range(20)}
        self.assertEqual(len(salts), 20)
        for salt in salts:
            self.assertRegex(salt, r"^[0-9a-f]{32}$")

    def test_round_trip(self) -> None:
        """What ``generate`` stores, ``check`` accepts, for every algorithm and salt position."""
        for algorithm in ("plain", "md5", "sha", "sha256", "sha512", "bcrypt", "pbkdf2"):
            for position in ("prefix", "suffix", "disable"):
                settings = HashSettings(algorithm, position, salt_rounds=5, mac_fun="sha512", iterations=3)
                stored, salt = generate(settings, b"s3cret")
                self.assertTrue(check(settings, stored, salt, b"s3cret"), (algorithm, position))
                self.assertFalse(check(settings, stored, salt, b"s3creT"), (algorithm, position))

    def test_simple_formats(self) -> None:
        """Hex digests in lower case with a hex salt; plain and ``disable`` with an empty salt."""
        stored, salt = generate(HashSettings("sha256", "suffix"), b"pw")
        self.assertRegex(stored, r"^[0-9a-f]{64}$")
        self.assertRegex(salt, r"^[0-9a-f]{32}$")
        self.assertEqual(generate(HashSettings("plain", "prefix"), b"pw"), ("pw", ""))
        self.assertEqual(generate(HashSettings("md5", "disable"), b"password")[1], "")

    def test_pbkdf2_format(self) -> None:
        """pbkdf2 is stored as lowercase hex of dk_length bytes (the digest's size by default)."""
        stored, salt = generate(HashSettings("pbkdf2", mac_fun="sha384", iterations=2), b"pw")
        self.assertRegex(stored, r"^[0-9a-f]{96}$")
        self.assertRegex(salt, r"^[0-9a-f]{32}$")
        stored, _ = generate(HashSettings("pbkdf2", mac_fun="sha", iterations=2, dk_length=7), b"pw")
        self.assertEqual(len(stored), 14)

    def test_bcrypt_format(self) -> None:
        """bcrypt is generated as ``$2a$`` with salt_rounds, and the salt stored is the hash itself."""
        stored, salt = generate(HashSettings("bcrypt", salt_rounds=6), b"pw")
        self.assertRegex(stored, r"^\$2a\$06\$[./A-Za-z0-9]{53}$")
        self.assertEqual(salt, stored)

    def test_bcrypt_long_password(self) -> None:
        """bcrypt looks at the first 72 bytes of a password, as the reference's library does."""
        settings = HashSettings("bcrypt", salt_rounds=5)
        stored, _ = generate(settings, b"a" * 100)
        self.assertTrue(check(settings, stored, None, b"a" * 72 + b"b"))
        self.assertFalse(check(settings, stored, None, b"a" * 71))

    def test_settings_of_section(self) -> None:
        """``HashSettings.of`` takes the hashing keys of an [authentication] section."""
        from ocppgw.config.sections import AuthenticationSection

        section = AuthenticationSection(
            backend="mysql", password_hash_algorithm="pbkdf2", salt_position="suffix", salt_rounds=7,
            mac_fun="sha512", iterations=9, dk_length=16,
        )  # fmt: skip
        self.assertEqual(HashSettings.of(section), HashSettings("pbkdf2", "suffix", 7, "sha512", 9, 16))

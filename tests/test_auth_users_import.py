"""Tests for ocppgw.auth.users_import: the reference's CSV and JSON user files, read as it reads them."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.auth.hashing import HashSettings, check, generate
from ocppgw.auth.users import User
from ocppgw.auth.users_import import Entry, ImportFileError, read_entries, to_users


class ReadTests(SynchronousTestCase):
    def write(self, name: str, content: str | bytes) -> Path:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    def problems(self, name: str, content: str | bytes, plain: bool = False) -> list[str]:
        path = self.write(name, content)
        error = self.assertRaises(ImportFileError, read_entries, path, plain, name)
        return error.problems

    def test_csv_as_the_reference_splits_it(self) -> None:
        """Header split on commas and spaces; fields on commas only and trimmed; CR, LF and CRLF line
        ends; empty lines dropped; an empty field is absent; quotes are literal; only true is true."""
        text = 'user_id, password_hash salt,is_superuser\r\n\r\n a , h1 ,,true\rb,"h2",s2,1\n\nc,h3,s3,TRUE\n'
        entries = read_entries(self.write("u.csv", text), plain=False)
        self.assertEqual(
            entries,
            [
                Entry("line 3", "a", "h1", None, True, False),
                Entry("line 4", "b", '"h2"', "s2", False, False),
                Entry("line 6", "c", "h3", "s3", False, False),
            ],
        )

    def test_json(self) -> None:
        """JSON: salt absent means "", null stays absent; is_superuser true or "true" only; unknown keys
        ignored; a namespace other than the global one is marked."""
        text = (
            '[{"user_id":"a","password_hash":"h","is_superuser":"true","x":1},'
            '{"user_id":"b","password_hash":"h","salt":null,"is_superuser":1},'
            '{"user_id":"c","password_hash":"h","salt":"s","namespace":"tenant"},'
            '{"user_id":"d","password_hash":"h","namespace":null}]'
        )
        self.assertEqual(
            read_entries(self.write("u.json", text), plain=False),
            [
                Entry("user 1", "a", "h", "", True, False),
                Entry("user 2", "b", "h", None, False, False),
                Entry("user 3", "c", "h", "s", False, True),
                Entry("user 4", "d", "h", "", False, False),
            ],
        )

    def test_plain_columns(self) -> None:
        """A plain file reads the password column instead of password_hash."""
        (entry,) = read_entries(
            self.write("p.csv", "user_id,password,is_superuser\nu,pw,false\n"), plain=True
        )
        self.assertEqual((entry.user_id, entry.secret, entry.is_superuser), ("u", "pw", False))

    def test_problems(self) -> None:
        """Each problem is one line naming the file and where; all are reported together."""
        self.assertEqual(
            self.problems("u.csv", "user_id,password_hash\n,h\na\nb,\n"),
            [
                "u.csv: line 2: user_id missing or not a text",
                "u.csv: line 3: expected 2 fields (user_id,password_hash), got 1",
                "u.csv: line 4: password_hash missing or empty (a hashed import; --plain reads passwords)",
            ],
        )
        self.assertEqual(
            self.problems("u.csv", "user_id,password\nu,p\n"),
            [
                "u.csv: line 1: no password_hash column in the header "
                "(a hashed import; --plain reads a password column)"
            ],
        )
        self.assertEqual(self.problems("u.csv", "\n\n"), ["u.csv: no users"])
        self.assertEqual(self.problems("u.json", "[]"), ["u.json: no users"])
        self.assertEqual(
            self.problems(
                "u.json", '[{"user_id":"a"}, 5, {"user_id":"b","password":"p","salt":3}]', plain=True
            ),
            [
                "u.json: user 1: password missing or empty",
                "u.json: user 2: expected an object",
                "u.json: user 3: salt must be a text",
            ],
        )
        self.assertEqual(
            self.problems("u.json", '[{"user_id": }]'),
            ["u.json: not valid JSON: Expecting value (line 1 column 14)"],
        )
        self.assertEqual(
            self.problems("u.json", b"\xff"), ["u.json: cannot read: not UTF-8 text (byte 0xff at offset 0)"]
        )
        self.assertEqual(
            self.problems("u.CSV", "x"), ["u.CSV: unsupported file format ('.CSV'), expected .csv or .json"]
        )
        self.assertEqual(
            self.problems("users", "x"),
            ["users: unsupported file format (no extension), expected .csv or .json"],
        )

    def test_missing_file(self) -> None:
        """A file that cannot be read is one line."""
        error = self.assertRaises(ImportFileError, read_entries, Path("/nonexistent/u.csv"), False)
        self.assertEqual(error.problems, ["/nonexistent/u.csv: cannot read: No such file or directory"])


class ToUsersTests(SynchronousTestCase):
    def test_hashed_kept_plain_hashed(self) -> None:
        """Hashed entries are stored as they are; plain ones hashed with a fresh salt; namespaced: None."""
        settings = HashSettings("sha512", "prefix")
        entries = [
            Entry("line 2", "a", "HASH", "salt", True, False),
            Entry("line 3", "b", "pw", None, False, True),
        ]
        self.assertEqual(to_users(entries, None), [User("a", "HASH", "salt", True), None])
        (user,) = to_users(
            [Entry("line 2", "p", "pässword", None, False, False)], lambda pw: generate(settings, pw)
        )
        assert user is not None
        self.assertTrue(check(settings, user.password_hash, user.salt, "pässword".encode()))
        self.assertRegex(user.salt or "", "^[0-9a-f]{32}$")

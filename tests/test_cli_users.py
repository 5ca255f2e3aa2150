"""``ocppgw users`` run as a real process: users it adds and imports authenticate in the gateway's
built-in database (``builtin.make``), including the reference's exported CSV and JSON files."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ocppgw.auth import builtin
from ocppgw.config import load_config
from ocppgw.core.ports import Credentials, Decision

ROOT = Path(__file__).resolve().parent.parent
GW_INI = """\
[authentication]
backend = built_in_database
user_id_type = username
password_hash_algorithm = {algorithm}
salt_position = suffix
salt_rounds = 5
[listeners.ws.default]
bind = 127.0.0.1:0
"""
# A.2's hashed CSV with a known password (sha256, suffix, secret123), as the reference exports it
REFERENCE_CSV = """\
user_id,password_hash,salt,is_superuser
CP001,59168fbe058b89d124b99700a419c0c57fe43116f91f5202a98902a77eb5a40e,e378187547bf2d6f0545a3f441aa4d8a,false
"""
# The reference's own hashed CSV and JSON (apps/emqx_auth/test/data): passwords not published
REFERENCE_CSV_UNKNOWN = """\
user_id,password_hash,salt,is_superuser
myuser3,b6c743545a7817ae8c8f624371d5f5f0373234bb0ff36b8ffbf19bce0e06ab75,de1024f462fb83910fd13151bd4bd235,true
myuser4,ee68c985a69208b6eda8c6c9b4c7c2d2b15ee2352cdd64a903171710a99182e8,ad773b5be9dd0613fe6c2f4d8c403139,false
"""
REFERENCE_JSON_UNKNOWN = """\
[{"user_id":"myuser1","password_hash":"c5e46903df45e5dc096dc74657610dbee8deaacae656df88a1788f1847390242",
  "salt":"e378187547bf2d6f0545a3f441aa4d8a","is_superuser":true},
 {"user_id":"myuser2","password_hash":"f4d17f300b11e522fd33f497c11b126ef1ea5149c74d2220f9a16dc876d4567b",
  "salt":"6d3f9bd5b54d94b98adbcfe10b6d181f","is_superuser":false}]
"""
# The same format with known passwords: CP002 as A.2's row (secret123), CP003 prefixed in upper case
KNOWN_JSON = """\
[{"user_id":"CP002","password_hash":"59168fbe058b89d124b99700a419c0c57fe43116f91f5202a98902a77eb5a40e",
  "salt":"e378187547bf2d6f0545a3f441aa4d8a","is_superuser":"true"},
 {"user_id":"CP003","password_hash":"7A37B85C8918EAC19A9089C0FA5A2AB4DCE3F90528DCDEEC108B23DDF3607B99",
  "salt":"salt","is_superuser":1,"extra":"ignored"}]
"""
PLAIN_CSV = "user_id,password,is_superuser\nmyuser3,password3,true\nmyuser4,password4,false\n"
PLAIN_JSON = '[{"user_id":"myuser1","password":"password1","is_superuser":true}]'


def creds(user: str, password: bytes | None) -> Credentials:
    return Credentials("any-cp", "127.0.0.1:5000", "ws.default", user, password)


class UsersCommandTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()
        self.directory.mkdir()
        self.gw_ini = self.directory / "gw.ini"
        self.write_config("sha256")

    def write_config(self, algorithm: str) -> None:
        self.gw_ini.write_text(GW_INI.format(algorithm=algorithm), encoding="utf-8")

    def file(self, name: str, text: str) -> str:
        path = self.directory / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    @inlineCallbacks
    def ocppgw(self, *args: str, stdin: bytes = b"", status: int = 0) -> Any:
        """Run ``python -m ocppgw.cli users --config gw.ini ARGS`` from another directory; its output."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        command = [sys.executable, "-m", "ocppgw.cli", "users", "--config", str(self.gw_ini), *args]
        result = yield deferToThread(
            subprocess.run, command, input=stdin, capture_output=True, env=env, cwd="/", timeout=60
        )
        self.assertEqual(result.returncode, status, result.stderr.decode())
        return result.stdout.decode(), result.stderr.decode()

    @inlineCallbacks
    def decide(self, user: str, password: bytes | None) -> Any:
        """What the gateway's built-in database says about ``user``/``password`` right now."""
        config = load_config(self.gw_ini)
        assert config.authentication is not None
        authenticator = builtin.make(config.authentication, reactor, config.gateway.data_dir)
        authenticator.start()
        try:
            return (yield authenticator.authenticate(creds(user, password)))
        finally:
            yield authenticator.stop()

    @inlineCallbacks
    def test_add_list_delete(self) -> Any:
        """add (stdin and --password), list, delete; the users it adds authenticate; errors exit 1."""
        yield self.ocppgw("add", "CP001", stdin=b"s3cret pass\n")
        yield self.ocppgw("add", "CP002", "--password", "pw2", "--superuser")
        self.assertEqual((yield self.decide("CP001", b"s3cret pass")), Decision.allow())
        self.assertEqual((yield self.decide("CP002", b"pw2")), Decision.allow(True))
        self.assertEqual(
            (yield self.decide("CP001", b"s3cret pass\n")), Decision.deny("bad_username_or_password")
        )
        self.assertEqual((yield self.decide("CP009", b"pw2")), Decision.ignore())
        out, _ = yield self.ocppgw("list")
        self.assertEqual(out, "CP001 is_superuser=false\nCP002 is_superuser=true\n")
        _, err = yield self.ocppgw("add", "CP001", "--password", "again", status=1)
        self.assertEqual(err, "ocppgw users: user 'CP001' already exists; delete it first\n")
        _, err = yield self.ocppgw("add", "CP003", stdin=b"", status=1)
        self.assertEqual(err, "ocppgw users: no password: give --password or one line on standard input\n")
        yield self.ocppgw("delete", "CP002")
        _, err = yield self.ocppgw("delete", "CP002", status=1)
        self.assertEqual(err, "ocppgw users: no user 'CP002'\n")
        self.assertEqual((yield self.decide("CP002", b"pw2")), Decision.ignore())
        self.assertTrue((self.directory / "data" / "users.sqlite").is_file())

    @inlineCallbacks
    def test_bcrypt_and_windows_line_end(self) -> Any:
        """With bcrypt the stored hash is $2a$; a CRLF after the password is not part of it."""
        self.write_config("bcrypt")
        yield self.ocppgw("add", "CP001", stdin=b"pw\r\n")
        self.assertEqual((yield self.decide("CP001", b"pw")), Decision.allow())
        self.assertEqual((yield self.decide("CP001", b"pw\r")), Decision.deny("bad_username_or_password"))

    @inlineCallbacks
    def test_import_reference_files(self) -> Any:
        """The reference's hashed CSV and JSON import with its counts; known passwords authenticate,
        wrong ones are denied, re-importing skips identical users."""
        out, _ = yield self.ocppgw("import", self.file("users.csv", REFERENCE_CSV))
        self.assertEqual(
            json.loads(out), {"total": 1, "success": 1, "override": 0, "skipped": 0, "failed": 0}
        )
        self.assertEqual(out, '{"total":1,"success":1,"override":0,"skipped":0,"failed":0}\n')
        out, _ = yield self.ocppgw("import", self.file("known.json", KNOWN_JSON))
        self.assertEqual(json.loads(out)["success"], 2)
        out, _ = yield self.ocppgw("import", self.file("ref.csv", REFERENCE_CSV_UNKNOWN))
        self.assertEqual(json.loads(out)["success"], 2)
        out, _ = yield self.ocppgw("import", self.file("ref.json", REFERENCE_JSON_UNKNOWN))
        self.assertEqual(json.loads(out)["success"], 2)
        out, _ = yield self.ocppgw("import", str(self.directory / "users.csv"))
        self.assertEqual(
            json.loads(out), {"total": 1, "success": 0, "override": 0, "skipped": 1, "failed": 0}
        )
        self.assertEqual((yield self.decide("CP001", b"secret123")), Decision.allow())
        self.assertEqual((yield self.decide("CP002", b"secret123")), Decision.allow(True))
        self.assertEqual((yield self.decide("CP003", b"password")), Decision.allow(False))
        self.assertEqual(
            (yield self.decide("CP001", b"wrongpass")), Decision.deny("bad_username_or_password")
        )
        self.assertEqual(
            (yield self.decide("myuser1", b"wrongpass")), Decision.deny("bad_username_or_password")
        )
        out, _ = yield self.ocppgw("list")
        self.assertIn("myuser3 is_superuser=true\n", out)

    @inlineCallbacks
    def test_import_plain(self) -> Any:
        """--plain hashes clear-text passwords with the configured algorithm; a re-import overrides."""
        out, _ = yield self.ocppgw("import", "--plain", self.file("plain.csv", PLAIN_CSV))
        self.assertEqual(
            json.loads(out), {"total": 2, "success": 2, "override": 0, "skipped": 0, "failed": 0}
        )
        out, _ = yield self.ocppgw("import", "--plain", self.file("plain.json", PLAIN_JSON))
        self.assertEqual(json.loads(out)["success"], 1)
        out, _ = yield self.ocppgw("import", "--plain", str(self.directory / "plain.csv"))
        self.assertEqual(json.loads(out)["override"], 2)
        self.assertEqual((yield self.decide("myuser3", b"password3")), Decision.allow(True))
        self.assertEqual((yield self.decide("myuser1", b"password1")), Decision.allow(True))
        self.assertEqual(
            (yield self.decide("myuser4", b"password3")), Decision.deny("bad_username_or_password")
        )

    @inlineCallbacks
    def test_bad_files_and_config(self) -> Any:
        """A bad file is one line per problem naming file and line, and nothing is imported; a gw.ini
        without the built-in database is refused."""
        bad = self.file("users.csv", "user_id,password_hash,salt,is_superuser\na,h,s,true\nb,h,s\n")
        _, err = yield self.ocppgw("import", bad, status=1)
        self.assertEqual(
            err, f"{bad}: line 3: expected 4 fields (user_id,password_hash,salt,is_superuser), got 3\n"
        )
        _, err = yield self.ocppgw("import", bad, "--plain", status=1)
        self.assertIn("line 1: no password column in the header", err)
        bad_json = self.file("u.json", '{"user_id": "a"}')
        _, err = yield self.ocppgw("import", bad_json, status=1)
        self.assertEqual(err, f"{bad_json}: expected a JSON array of user objects\n")
        out, _ = yield self.ocppgw("list")
        self.assertEqual(out, "")
        self.gw_ini.write_text("[listeners.ws.default]\nbind = 1\n", encoding="utf-8")
        _, err = yield self.ocppgw("list", status=1)
        self.assertIn("[authentication] backend: ocppgw users needs backend = built_in_database", err)
        self.gw_ini.write_text("[authentication]\nbackend = nope\n", encoding="utf-8")
        _, err = yield self.ocppgw("list", status=1)
        self.assertIn(f"{self.gw_ini}: [authentication] backend: expected one of", err)

    def test_console_script_declared(self) -> None:
        """setup.cfg installs the ``ocppgw`` console script as ocppgw.cli:main, and depends on bcrypt."""
        setup = configparser.ConfigParser()
        setup.read(ROOT / "setup.cfg", encoding="utf-8")
        self.assertIn("ocppgw = ocppgw.cli:main", setup["options.entry_points"]["console_scripts"])
        self.assertIn("bcrypt", setup["options"]["install_requires"])

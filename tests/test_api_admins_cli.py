"""``ocppgw admins``: add, passwd, list, delete against a gw.ini's data_dir, passwords from stdin."""

from __future__ import annotations

import io
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.api.admins import AdminStore
from ocppgw.cli import main, parser


class AdminsCliTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.ini = self.dir / "gw.ini"
        self.ini.write_text("[listeners.ws.default]\nbind = 0\n", encoding="utf-8")

    def run_cli(self, *argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
        args = parser().parse_args(["admins", "--config", str(self.ini), *argv])
        out, err = io.StringIO(), io.StringIO()
        status = args.run(args, io.BytesIO(stdin), out, err)
        return status, out.getvalue(), err.getvalue()

    def test_add_passwd_list_delete(self) -> None:
        """add --role viewer and passwd read the password from stdin; the store checks them."""
        store = AdminStore(self.dir / "data")
        self.assertEqual(self.run_cli("add", "ann", "--role", "viewer", stdin=b"pw1\n")[0], 0)
        self.assertEqual(store.verify("ann", "pw1").role, "viewer")
        self.assertEqual(self.run_cli("passwd", "ann", stdin=b"pw2\n")[0], 0)
        self.assertIsNone(store.verify("ann", "pw1"))
        self.assertIsNotNone(store.verify("ann", "pw2"))
        self.assertEqual(self.run_cli("list")[1], "ann role=viewer\n")
        self.assertEqual(self.run_cli("delete", "ann")[0], 0)
        self.assertEqual(store.list(), [])

    def test_errors(self) -> None:
        """Unknown names, a duplicate, an empty password: status 1 and one line on stderr."""
        self.assertEqual(self.run_cli("add", "ann", stdin=b"pw\n")[0], 0)
        for argv, stdin, text in [
            (("add", "ann"), b"pw\n", "already exists"),
            (("passwd", "bob"), b"pw\n", "no administrator 'bob'"),
            (("passwd", "ann"), b"\n", "must not be empty"),
            (("delete", "bob"), b"", "no administrator 'bob'"),
        ]:
            status, _, err = self.run_cli(*argv, stdin=stdin)
            self.assertEqual(status, 1)
            self.assertIn(text, err)
            self.assertEqual(err.count("\n"), 1)

    def test_main_dispatches(self) -> None:
        """``ocppgw admins`` is a subcommand of the console script."""
        with self.assertRaises(SystemExit):
            main(["admins", "--help"])

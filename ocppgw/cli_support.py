"""What the ``ocppgw`` commands share: their parser shape, one-line errors and password input."""

from __future__ import annotations

import getpass
import os
from typing import IO, Any


class CommandError(Exception):
    """A problem to print as one line, ending the command with status 1."""


def command_parser(commands: Any, name: str, help: str, item: str, item_help: str, run: Any) -> Any:
    """``ocppgw <name> --config GW_INI ACTION`` (handled by ``run``) with ``list`` and ``delete <item>``
    already there; the subparsers, for the command's other actions."""
    command = commands.add_parser(name, help=help)
    command.set_defaults(run=run)
    command.add_argument("--config", required=True, metavar="GW_INI", help="the gateway's gw.ini")
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help=f"list the {name}")
    actions.add_parser("delete", help=f"delete {item_help}").add_argument(item)
    return actions


def read_password(stdin: IO[bytes], user_id: str) -> bytes:
    """One line of standard input without its line end; a prompt without echo on a terminal."""
    if stdin.isatty():
        return os.fsencode(getpass.getpass(f"Password for {user_id}: "))
    line = stdin.readline()
    if not line:
        raise CommandError("no password: give --password or one line on standard input")
    return line.removesuffix(b"\n").removesuffix(b"\r")

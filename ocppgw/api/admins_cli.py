"""``ocppgw admins --config gw.ini passwd|add|list|delete``: the management API's administrators in
``<data_dir>/admins.sqlite``; the password is one line of standard input (no echo on a terminal)."""

from __future__ import annotations

import argparse
from typing import IO, Any

from ocppgw.api.admins import AdminExists, AdminStore
from ocppgw.api.http import ADMINISTRATOR, ROLES
from ocppgw.cli_support import CommandError, command_parser, read_password
from ocppgw.config import ConfigError, load_config


def add_parser(commands: Any) -> None:
    """The ``admins`` command and its actions, on the ``ocppgw`` parser's subparsers."""
    actions = command_parser(
        commands, "admins", "manage the management API's administrators", "name", "an administrator", run
    )
    passwd = actions.add_parser("passwd", help="set a password (one line of standard input)")
    passwd.add_argument("name")
    add = actions.add_parser("add", help="add an administrator (password from standard input)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default=ADMINISTRATOR)


def run(args: argparse.Namespace, stdin: IO[bytes], stdout: IO[str], stderr: IO[str]) -> int:
    """Run one ``admins`` action; the exit status."""
    try:
        store = AdminStore(load_config(args.config).gateway.data_dir)
        if args.action == "list":
            for admin in store.list():
                print(f"{admin.username} role={admin.role}", file=stdout)
        elif args.action == "delete":
            if not store.delete(args.name):
                raise CommandError(f"no administrator {args.name!r}")
        else:
            if not args.name:
                raise CommandError("the name must not be empty")
            password = read_password(stdin, args.name).decode("utf-8", "surrogateescape")
            if not password:
                raise CommandError("the password must not be empty")
            if args.action == "add":
                store.add(args.name, password, args.role)
            elif not store.set_password(args.name, password):
                raise CommandError(f"no administrator {args.name!r}")
    except ConfigError as e:
        for line in e.problems:
            print(line, file=stderr)
        return 1
    except AdminExists as e:
        print(f"ocppgw admins: administrator {str(e)!r} already exists", file=stderr)
        return 1
    except (CommandError, OSError) as e:
        print(f"ocppgw admins: {e}", file=stderr)
        return 1
    return 0

"""``ocppgw users --config gw.ini add|import|list|delete``: the built-in database's users.

Reads the same gw.ini as the gateway (its ``[authentication]`` hashing settings and ``[gateway]
data_dir``) and writes the SQLite file the running gateway reads at each handshake. Every error is
one line on standard error and a non-zero exit status; passwords are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from ocppgw.auth.hashing import HashSettings, generate
from ocppgw.auth.users import User, UserExists, UserStore
from ocppgw.auth.users_import import ImportFileError, read_entries, to_users
from ocppgw.cli_support import CommandError, command_parser, read_password
from ocppgw.config import ConfigError, GatewayConfig, load_config


def add_parser(commands: Any) -> None:
    """The ``users`` command and its subcommands, on the ``ocppgw`` parser's subparsers."""
    actions = command_parser(
        commands, "users", "manage the built-in database's users", "user_id", "a user", run
    )
    add = actions.add_parser("add", help="add a user; the password is one line of standard input")
    add.add_argument("user_id", help="the username or charge point id, per [authentication] user_id_type")
    add.add_argument("--password", help="the password (else read from standard input)")
    add.add_argument("--superuser", action="store_true", help="mark the user as a superuser")
    imported = actions.add_parser("import", help="import the reference's CSV or JSON user file")
    imported.add_argument("file", help="a .csv or .json file")
    imported.add_argument("--plain", action="store_true", help="the file has clear-text passwords")


def run(args: argparse.Namespace, stdin: IO[bytes], stdout: IO[str], stderr: IO[str]) -> int:
    """Run one ``users`` action; the exit status."""
    try:
        config = _config(args.config)
        settings = HashSettings.of(config.authentication)  # type: ignore[arg-type]
        store = UserStore(config.gateway.data_dir)
        try:
            if args.action == "add":
                _add(store, settings, args, stdin)
            elif args.action == "import":
                print(_import(store, settings, args), file=stdout)
            elif args.action == "list":
                for user in store.list():
                    print(f"{user.user_id} is_superuser={str(user.is_superuser).lower()}", file=stdout)
            elif not store.delete(args.user_id):
                raise CommandError(f"no user {args.user_id!r}")
        finally:
            store.close()
    except ConfigError as e:
        for line in e.problems:
            print(line, file=stderr)
        return 1
    except ImportFileError as e:
        for line in e.problems:
            print(line, file=stderr)
        return 1
    except (CommandError, OSError) as e:
        print(f"ocppgw users: {e}", file=stderr)
        return 1
    return 0


def _config(path: str) -> GatewayConfig:
    config = load_config(path)
    if config.authentication is None or config.authentication.backend != "built_in_database":
        raise CommandError(
            f"{path}: [authentication] backend: ocppgw users needs backend = built_in_database (enabled)"
        )
    return config


def _add(store: UserStore, settings: HashSettings, args: argparse.Namespace, stdin: IO[bytes]) -> None:
    if not args.user_id:
        raise CommandError("the user id must not be empty")
    password = (
        os.fsencode(args.password) if args.password is not None else read_password(stdin, args.user_id)
    )
    if not password:
        raise CommandError("the password must not be empty")
    password_hash, salt = generate(settings, password)
    try:
        store.add(User(args.user_id, password_hash, salt, args.superuser))
    except UserExists:
        raise CommandError(f"user {args.user_id!r} already exists; delete it first") from None


def _import(store: UserStore, settings: HashSettings, args: argparse.Namespace) -> str:
    entries = read_entries(Path(args.file), args.plain, args.file)
    users = to_users(entries, (lambda password: generate(settings, password)) if args.plain else None)
    return json.dumps(asdict(store.import_users(users)), separators=(",", ":"))

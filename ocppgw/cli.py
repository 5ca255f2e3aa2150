"""The ``ocppgw`` console script: administration commands next to ``twistd ocppgw``.

One subcommand per area, each in its own module: ``users`` (the built-in database,
``ocppgw.auth.users_cli``); ``admins`` (the management API's accounts, ``ocppgw.api.admins_cli``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ocppgw.api import admins_cli
from ocppgw.auth import users_cli


def parser() -> argparse.ArgumentParser:
    """The ``ocppgw`` argument parser with every subcommand."""
    top = argparse.ArgumentParser(
        prog="ocppgw", description="ocppgw administration (run the gateway with twistd)"
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    users_cli.add_parser(commands)
    admins_cli.add_parser(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status."""
    args = parser().parse_args(argv)
    return int(args.run(args, sys.stdin.buffer, sys.stdout, sys.stderr))


if __name__ == "__main__":
    sys.exit(main())

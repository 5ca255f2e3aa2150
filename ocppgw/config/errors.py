"""How a problem in gw.ini is told: one line per problem, all of them in one ``ConfigError``."""

from __future__ import annotations


def problem_line(source: str, section: str, key: str | None, reason: str) -> str:
    """The one form of every config problem, wherever it is found: ``gw.ini: [section] key: reason``."""
    where = f"[{section}]:" if key is None else f"[{section}] {key}:"
    return f"{source}: {where} {reason}"


class ConfigError(Exception):
    """One or more problems in a config file; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)

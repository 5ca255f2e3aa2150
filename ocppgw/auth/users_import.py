"""User files in the reference's import formats: CSV and JSON, hashed or with clear-text passwords.

The format comes from the extension (``.csv`` or ``.json``, case-sensitive). CSV: the first line is
the header (split on commas and spaces), each other line is split on commas only and its fields
trimmed, no quoting, an empty field is an absent value; JSON: an array of objects. Columns
``user_id``, ``password_hash`` and ``salt`` (hashed) or ``password`` (plain), ``is_superuser`` (only
``true`` counts), ``namespace``; others are ignored. Stricter than the reference on errors: each
problem is one line naming the file and the line (or the user's index), and nothing is imported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocppgw.auth.users import User
from ocppgw.config.loader import read_text_file

_LINE_END = re.compile(r"\r\n|\r|\n")
_HEADER_SPLIT = re.compile(r"[, \n]")


class ImportFileError(Exception):
    """A user file that cannot be imported; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Entry:
    """One user of a file: ``secret`` is the stored hash (hashed files) or the password (plain ones)."""

    where: str  # "line 3" or "user 3", for messages
    user_id: str
    secret: str = field(repr=False)
    salt: str | None = field(repr=False)
    is_superuser: bool
    namespaced: bool  # set to a namespace other than the global one: cannot be stored here


def _superuser(value: object) -> bool:
    """As the reference's built-in database: only ``true`` or ``"true"``; ``1`` is not."""
    return value is True or value == "true"


def read_entries(path: Path, plain: bool, shown: str | None = None) -> list[Entry]:
    """The users of the file at ``path``; raises ``ImportFileError`` naming ``shown`` (the path as given)."""
    name = shown or str(path)
    reader: Callable[[str, str, bool], list[Entry]]
    if path.suffix == ".csv":
        reader = _csv_entries
    elif path.suffix == ".json":
        reader = _json_entries
    else:
        kind = f"'{path.suffix}'" if path.suffix else "no extension"
        raise ImportFileError([f"{name}: unsupported file format ({kind}), expected .csv or .json"])
    try:
        text = read_text_file(path)
    except ValueError as e:
        raise ImportFileError([f"{name}: {e}"]) from None
    entries = reader(name, text, plain)
    if not entries:
        raise ImportFileError([f"{name}: no users"])
    return entries


def _csv_entries(name: str, text: str, plain: bool) -> list[Entry]:
    lines = [(number, line) for number, line in enumerate(_LINE_END.split(text), 1) if line.strip()]
    if not lines:
        return []
    header_number, header_line = lines[0]
    header = [token for token in _HEADER_SPLIT.split(header_line) if token]
    secret_key = "password" if plain else "password_hash"
    missing = [key for key in ("user_id", secret_key) if key not in header]
    if missing:
        hint = " (a hashed import; --plain reads a password column)" if not plain else ""
        columns = " and ".join(missing)
        raise ImportFileError([f"{name}: line {header_number}: no {columns} column in the header{hint}"])

    def rows() -> Iterator[Entry | str]:
        for number, line in lines[1:]:
            fields = [item.strip() for item in line.split(",")]
            if len(fields) != len(header):
                yield f"line {number}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}"
                continue
            row = {key: value or None for key, value in zip(header, fields, strict=True)}
            yield _entry(f"line {number}", row, secret_key, absent_salt=None)

    return _all_or_nothing(name, rows())


def _json_entries(name: str, text: str, plain: bool) -> list[Entry]:
    try:
        users = json.loads(text)
    except ValueError as e:
        reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        where = f" (line {e.lineno} column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise ImportFileError([f"{name}: not valid JSON: {reason}{where}"]) from None
    if not isinstance(users, list):
        raise ImportFileError([f"{name}: expected a JSON array of user objects"])
    secret_key = "password" if plain else "password_hash"
    return _all_or_nothing(
        name,
        (
            _entry(f"user {index}", user, secret_key, absent_salt="")
            if isinstance(user, dict)
            else f"user {index}: expected an object"
            for index, user in enumerate(users, 1)
        ),
    )


def _all_or_nothing(name: str, results: Iterable[Entry | str]) -> list[Entry]:
    """Every entry, or ``ImportFileError`` with one line per problem (a string among ``results``)."""
    entries: list[Entry] = []
    problems: list[str] = []
    for result in results:
        if isinstance(result, str):
            problems.append(f"{name}: {result}")
        else:
            entries.append(result)
    if problems:
        raise ImportFileError(problems)
    return entries


def _entry(where: str, row: dict[str, Any], secret_key: str, absent_salt: str | None) -> Entry | str:
    """The entry of one row, or its problem (without the file name)."""
    user_id = row.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        return f"{where}: user_id missing or not a text"
    secret = row.get(secret_key)
    if not isinstance(secret, str) or not secret:
        if secret_key == "password_hash":
            return f"{where}: password_hash missing or empty (a hashed import; --plain reads passwords)"
        return f"{where}: password missing or empty"
    salt = row.get("salt", absent_salt)
    if salt is not None and not isinstance(salt, str):
        return f"{where}: salt must be a text"
    namespace = row.get("namespace")
    return Entry(where, user_id, secret, salt, _superuser(row.get("is_superuser")), bool(namespace))


def to_users(
    entries: list[Entry], hash_password: Callable[[bytes], tuple[str, str]] | None
) -> list[User | None]:
    """The users to store: hashed entries as they are, plain ones through ``hash_password`` (a fresh
    salt each); None for an entry of another namespace (counted as failed, as the reference does
    with what it cannot store)."""
    users: list[User | None] = []
    for entry in entries:
        if entry.namespaced:
            users.append(None)
        elif hash_password is None:
            users.append(User(entry.user_id, entry.secret, entry.salt, entry.is_superuser))
        else:
            password_hash, salt = hash_password(entry.secret.encode("utf-8"))
            users.append(User(entry.user_id, password_hash, salt, entry.is_superuser))
    return users

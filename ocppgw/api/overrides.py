"""What the management API changed, kept in ``<data_dir>/overrides.json`` and layered over gw.ini.

The file holds INI-level text, ``{"<section>": {"<key>": "<text>" | null} | null}``, so an override
goes through the same whitelist and converters as gw.ini and is checked exactly as if written there.

Precedence, applied when gw.ini is read (``ocppgw.config.loader.load_config``):

- a section given as ``null`` is removed, whatever gw.ini holds (a listener the API deleted stays
  deleted; ``"authentication": null`` removes authentication);
- otherwise key by key: a key's text replaces gw.ini's, a key given as ``null`` is removed (back to its
  default), keys the file does not name keep gw.ini's value; a section gw.ini lacks is added.

``[gateway] data_dir`` cannot be overridden: it says where this file is. Secrets are stored as the
operator gave them, so the file is written with mode 0600, atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ocppgw.config.errors import ConfigError, problem_line
from ocppgw.config.ini import IniReader

FILE_NAME = "overrides.json"

Sections = dict[str, "dict[str, str | None] | None"]


def overrides_path(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def read_overrides(data_dir: Path) -> Sections:
    """The overrides in ``data_dir`` (empty when there is no file), or ``ConfigError`` with one line."""
    path = overrides_path(data_dir)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError([f"{path}: not valid JSON (line {e.lineno} column {e.colno})"]) from None
    problem = shape_problem(data)
    if problem is not None:
        raise ConfigError([f"{path}: {problem}"])
    return data  # type: ignore[no-any-return]


def shape_problem(data: Any) -> str | None:
    """Why ``data`` is not ``{section: {key: text | null} | null}``, or None."""
    if not isinstance(data, dict):
        return "expected an object of sections"
    for section, values in data.items():
        if values is None:
            continue
        if not isinstance(values, dict):
            return f"[{section}]: expected an object of keys or null"
        for key, value in values.items():
            if value is not None and not isinstance(value, str):
                return f"[{section}] {key}: expected text or null"
    if isinstance(data.get("gateway"), dict) and "data_dir" in data["gateway"]:
        return "[gateway] data_dir: cannot be overridden (it says where this file is)"
    return None


def write_overrides(data_dir: Path, sections: Mapping[str, Any]) -> None:
    """Replace the file with ``sections``: temporary file (0600), fsync, rename, fsync the directory."""
    path = overrides_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    data = json.dumps(sections, indent=2, sort_keys=True).encode() + b"\n"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def merged(current: Mapping[str, Any], changes: Mapping[str, Any]) -> Sections:
    """``current`` with ``changes`` layered on, by the file's own precedence (a new file's content)."""
    result: Sections = {s: (dict(vals) if vals is not None else None) for s, vals in current.items()}
    for section, values in changes.items():
        if values is None or result.get(section) is None:
            result[section] = dict(values) if values is not None else None
        else:
            result[section].update(values)  # type: ignore[union-attr]
    return result


def layer(parser: configparser.ConfigParser, sections: Mapping[str, Any]) -> None:
    """Apply ``sections`` to a parsed gw.ini, by the precedence in this module's docstring."""
    for section, values in sections.items():
        if values is None:
            parser.remove_section(section)
            continue
        if not parser.has_section(section):
            parser.add_section(section)
        for key, value in values.items():
            if value is None:
                parser.remove_option(section, key)
            else:
                parser.set(section, key, value)


class OverlayReader(IniReader):
    """An ``IniReader`` that layers the overrides over gw.ini once parsed; a problem in a key the
    overrides set names the overrides file instead of gw.ini."""

    def __init__(self, *args: Any, sections: Mapping[str, Any], overrides_source: str) -> None:
        super().__init__(*args)
        self.sections = sections
        self.overrides_source = overrides_source

    def parse(self, text: str) -> configparser.ConfigParser:
        parser = super().parse(text)
        layer(parser, self.sections)
        return parser

    def problem(self, section: str, key: str | None, reason: str) -> None:
        values = self.sections.get(section)
        if isinstance(values, dict) and (key is None or key in values):
            self.problems.append(problem_line(self.overrides_source, section, key, reason))
        else:
            super().problem(section, key, reason)

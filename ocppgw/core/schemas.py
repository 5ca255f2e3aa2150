"""OCPP 1.6 JSON-schema checks, compiled once at start-up.

Schemas are found by ``$id`` (the configured prefix + Action + Request or
Response, as the reference gateway does) and, for files whose ids carry
another prefix such as the security extension's, by file name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from jsonschema import FormatChecker, ValidationError, validators
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from ocppgw.core import messages

Kind = Literal["Request", "Response"]

_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if "T" not in value.upper():
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    datetime.fromisoformat(value.replace("z", "Z"))
    return True


@_FORMATS.checks("uri", raises=ValueError)
def _is_uri(value: object) -> bool:
    if isinstance(value, str) and ":" not in value:
        raise ValueError(f"{value!r} is not a URI")
    return True


def _decimal_multiple_of(validator: Validator, step: Any, instance: Any, schema: dict) -> Any:
    """multipleOf in decimal arithmetic: 3.3 is a multiple of 0.1, whatever binary floats say."""
    if not validator.is_type(instance, "number"):
        return
    try:
        remainder = Decimal(str(instance)) % Decimal(str(step))
    except InvalidOperation:
        remainder = Decimal(1)
    if remainder != 0:
        yield ValidationError(f"{instance!r} is not a multiple of {step}")


_CODE_BY_KEYWORD = {
    "type": messages.TYPE_CONSTRAINT_VIOLATION,
    "required": messages.OCCURENCE_CONSTRAINT_VIOLATION,
    "minItems": messages.OCCURENCE_CONSTRAINT_VIOLATION,
    "maxItems": messages.OCCURENCE_CONSTRAINT_VIOLATION,
    "additionalProperties": messages.FORMATION_VIOLATION,
}


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a payload failed its schema, as an OCPP 1.6 CallError would say it."""

    code: str
    description: str


class SchemaLoadError(Exception):
    """The schema directory holds a file that is not a usable JSON schema."""


def shipped_schema_dir() -> Path:
    """The schemas shipped in the wheel (``ocppgw/schemas``), or the checkout's ``schemas/`` from source."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "schemas"
    if installed.is_dir() and any(installed.glob("*.json")):
        return installed
    return package.parent / "schemas"


class SchemaRegistry:
    """Compiled validators by (Action, Kind)."""

    def __init__(self, validators_by_key: dict[tuple[str, Kind], Validator]) -> None:
        self._validators = validators_by_key

    @classmethod
    def load(cls, directory: Path, id_prefix: str) -> SchemaRegistry:
        """Read and compile every ``*.json`` schema in ``directory``."""
        by_id: dict[str, Validator] = {}
        by_name: dict[tuple[str, Kind], Validator] = {}
        problems = []
        for path in sorted(directory.glob("*.json")):
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(schema, dict):
                    raise ValueError(f"a schema must be a JSON object, not {type(schema).__name__}")
                base = validators.validator_for(schema)
                base.check_schema(schema)
            except (OSError, ValueError, SchemaError) as e:
                problems.append(f"{path}: {str(e).splitlines()[0]}")
                continue
            compiled = validators.extend(base, {"multipleOf": _decimal_multiple_of})(
                schema, format_checker=_FORMATS
            )
            schema_id = schema.get("$id") or schema.get("id")
            if isinstance(schema_id, str):
                by_id[schema_id] = compiled
            key = _key_from_name(path.stem)
            if key is not None:
                by_name[key] = compiled
        if problems:
            raise SchemaLoadError("; ".join(problems))
        resolved = dict(by_name)
        for action, kind in {*by_name, *_keys_from_ids(by_id, id_prefix)}:
            found = by_id.get(f"{id_prefix}{action}{kind}")
            if found is not None:
                resolved[(action, kind)] = found
        return cls(resolved)

    def __len__(self) -> int:
        return len(self._validators)

    def has(self, action: str, kind: Kind) -> bool:
        """Whether a schema exists for this message."""
        return (action, kind) in self._validators

    def check(self, action: str, kind: Kind, payload: Any) -> Violation | None:
        """None when the payload is valid or has no schema; else the first violation."""
        validator = self._validators.get((action, kind))
        if validator is None:
            return None
        error = next(iter(validator.iter_errors(payload)), None)
        if error is None:
            return None
        path = "/".join(str(p) for p in error.absolute_path)
        code = _CODE_BY_KEYWORD.get(str(error.validator), messages.PROPERTY_CONSTRAINT_VIOLATION)
        where = f"{path}: " if path else ""
        return Violation(code, f"{action}{kind}: {where}{_short(error.message)}")


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_from_name(stem: str) -> tuple[str, Kind] | None:
    for kind in ("Request", "Response"):
        if stem.endswith(kind) and len(stem) > len(kind):
            return stem[: -len(kind)], kind  # type: ignore[return-value]
    return None


def _keys_from_ids(by_id: dict[str, Validator], prefix: str) -> list[tuple[str, Kind]]:
    keys = []
    for schema_id in by_id:
        if schema_id.startswith(prefix):
            key = _key_from_name(schema_id[len(prefix) :])
            if key is not None:
                keys.append(key)
    return keys

"""What the gateway, listener and authentication endpoints share: the context they need, the
reference's value forms (``30s``, RFC 3339 times), body checks, and one way to change the config.

A change is checked by loading gw.ini with the changed overrides layered on (the same whitelist and
converters as gw.ini), then saved to ``<data_dir>/overrides.json`` and made the service's config.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ocppgw.api.http import ApiError, bad_request
from ocppgw.api.overrides import merged, read_overrides, write_overrides
from ocppgw.config import ConfigError, GatewayConfig, load_config

SECRET = "******"  # what a secret is shown as; sent back, it keeps the stored value


class ManageContext(Protocol):
    """What these endpoints use of ``ocppgw.api.context.ApiContext``."""

    service: Any  # ocppgw.api.context.ManagedGateway
    directory: Any  # ocppgw.api.directory.Directory
    clock: Any
    data_dir: Path


def rfc3339(seconds: float) -> str:
    """``2021-12-07T10:44:02.721+08:00``: milliseconds and the local offset, as the reference."""
    moment = datetime.datetime.fromtimestamp(seconds).astimezone()
    return moment.isoformat(timespec="milliseconds")


def duration(seconds: float) -> str:
    """A duration as the reference writes it: ``30s``, ``500ms``."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    return f"{int(seconds)}s"


def ini_text(section: str, key: str, value: Any) -> str | None:
    """A JSON value as gw.ini text (checked later by gw.ini's own converters); None stays None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ", ".join(value)
    raise bad_request(f"Bad config value for '{section}.{key}': expected text, a number or a boolean")


def object_body(body: Any, allowed: frozenset[str], what: str) -> dict[str, Any]:
    """``body`` as a JSON object whose keys are all in ``allowed``, else 400 naming the first bad one."""
    if not isinstance(body, dict):
        raise bad_request(f"{what}: expected a JSON object")
    for key in body:
        if key not in allowed:
            raise bad_request(f"{what}: unknown field '{str(key)[:60]}'")
    return body


def keep_secret(given: Any, stored: str | None) -> Any:
    """``******`` sent back keeps the stored secret; anything else replaces it."""
    return stored if given == SECRET else given


def change_config(context: ManageContext, changes: Mapping[str, Any]) -> GatewayConfig:
    """Check ``changes`` (overrides sections) layered over gw.ini and the saved overrides, save them
    and make the result the service's config; 400 ``Invalid configurations: …`` when they do not check."""
    service = context.service
    current = service.config
    data_dir = current.gateway.data_dir  # where load_config looks, as context.data_dir should be
    try:
        candidate = merged(read_overrides(data_dir), changes)
        config = load_config(current.source, overrides=candidate)
    except ConfigError as e:
        raise bad_request("Invalid configurations: " + "; ".join(_short(p) for p in e.problems)) from None
    try:
        write_overrides(data_dir, candidate)
    except OSError as e:
        raise ApiError(500, "UNKNOWN_ERROR", f"cannot save the change: {e.strerror or e}") from None
    service.config = config
    return config


def _short(problem: str) -> str:
    """A problem line without the file path in front (``[gateway] idle_timeout: …``)."""
    at = problem.find(": [")
    return problem[at + 2 :] if at >= 0 else problem

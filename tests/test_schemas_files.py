"""The shipped OCPP 1.6 schemas in ``schemas/``: shape, ids, agreement with the ``ocpp`` package."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft6Validator, validators
from twisted.trial.unittest import SynchronousTestCase

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

CORE_ACTIONS = (
    "Authorize",
    "BootNotification",
    "CancelReservation",
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "ClearChargingProfile",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "GetCompositeSchedule",
    "GetConfiguration",
    "GetDiagnostics",
    "GetLocalListVersion",
    "Heartbeat",
    "MeterValues",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "ReserveNow",
    "Reset",
    "SendLocalList",
    "SetChargingProfile",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
    "TriggerMessage",
    "UnlockConnector",
    "UpdateFirmware",
)

SECURITY_ACTIONS = (
    "CertificateSigned",
    "DeleteCertificate",
    "ExtendedTriggerMessage",
    "GetInstalledCertificateIds",
    "GetLog",
    "InstallCertificate",
    "LogStatusNotification",
    "SecurityEventNotification",
    "SignCertificate",
    "SignedFirmwareStatusNotification",
    "SignedUpdateFirmware",
)

CORE_PREFIX = "urn:OCPP:1.6:2019:12:"
SECURITY_PREFIX = "urn:OCPP:1.6:security:2:2020:3:"
KINDS = ("Request", "Response")

# Differences from the ocpp package's v16 schemas that we keep on purpose, keyed by
# (our file name, property path, facet). Each must still occur: a stale entry fails.
_PERIODS_1_N = "the spec's ChargingSchedule has chargingSchedulePeriod 1..*; ocpp omits minItems here"
ALLOWED_DIFFERENCES: dict[tuple[str, str, str], str] = {
    ("MeterValuesRequest.json", "meterValue[].sampledValue[].unit", "enum"): (
        "ocpp adds 'Hertz': errata v4.0 calls Hertz Frequency's implied unit, no UnitOfMeasure value"
    ),
    ("StopTransactionRequest.json", "transactionData[].sampledValue", "minItems"): (
        "the spec's MeterValue has sampledValue 1..*; ocpp has minItems 1 only in MeterValues"
    ),
    (
        "RemoteStartTransactionRequest.json",
        "chargingProfile.chargingSchedule.chargingSchedulePeriod",
        "minItems",
    ): _PERIODS_1_N,
    (
        "SetChargingProfileRequest.json",
        "csChargingProfiles.chargingSchedule.chargingSchedulePeriod",
        "minItems",
    ): _PERIODS_1_N,
    (
        "GetCompositeScheduleResponse.json",
        "chargingSchedule.chargingSchedulePeriod",
        "minItems",
    ): _PERIODS_1_N,
}

# Facets compared between the two schema sets, per property path.
FACETS = (
    "type",
    "enum",
    "required",
    "properties",
    "additionalProperties",
    "maxLength",
    "format",
    "multipleOf",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
)


def _all_names() -> list[tuple[str, str, str]]:
    """(action, kind, expected $id) for all 78 messages."""
    names = []
    for actions, prefix in ((CORE_ACTIONS, CORE_PREFIX), (SECURITY_ACTIONS, SECURITY_PREFIX)):
        for action in actions:
            for kind in KINDS:
                names.append((action, kind, f"{prefix}{action}{kind}"))
    return names


def _load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _ours(action: str, kind: str) -> dict[str, Any]:
    return _load(SCHEMA_DIR / f"{action}{kind}.json")


def _ocpp_dir() -> Path:
    import ocpp.v16  # a test extra: the agreement test must not pass without it

    return Path(ocpp.v16.__file__).resolve().parent / "schemas"


def _theirs(action: str, kind: str) -> dict[str, Any]:
    name = f"{action}.json" if kind == "Request" else f"{action}Response.json"
    return _load(_ocpp_dir() / name)


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow local ``$ref`` pointers (``#/definitions/X``) until a plain schema is reached."""
    seen = 0
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#"):
            raise AssertionError(f"non-local $ref {ref!r}")
        target: Any = root
        for part in ref.lstrip("#").strip("/").split("/"):
            if part:
                target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
        seen += 1
        if seen > 20:
            raise AssertionError(f"$ref loop at {ref!r}")
    return node


def _types(node: dict[str, Any]) -> frozenset[str] | None:
    t = node.get("type")
    if t is None:
        return None
    return frozenset([t] if isinstance(t, str) else t)


def _facets(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flatten a schema to {property path: {facet: value}}; arrays add ``[]`` to the path."""
    out: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        node = _resolve(node, schema)
        facets: dict[str, Any] = {"type": _types(node)}
        if "enum" in node:
            facets["enum"] = frozenset(node["enum"])
        for facet in ("maxLength", "format", "multipleOf", "minimum", "maximum", "minItems", "maxItems"):
            if facet in node:
                facets[facet] = node[facet]
        if "properties" in node or facets["type"] == frozenset(["object"]):
            facets["required"] = frozenset(node.get("required", ()))
            facets["properties"] = frozenset(node.get("properties", {}))
            facets["additionalProperties"] = node.get("additionalProperties", True)
        out[path] = facets
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}" if path else name)
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    return out


def _differences(action: str, kind: str) -> list[tuple[str, str, str, Any, Any]]:
    """(file, path, facet, ours, theirs) for every facet that differs."""
    file = f"{action}{kind}.json"
    ours, theirs = _facets(_ours(action, kind)), _facets(_theirs(action, kind))
    found = []
    for path in sorted(ours.keys() | theirs.keys()):
        if path not in ours or path not in theirs:
            found.append((file, path, "path", path in ours, path in theirs))
            continue
        for facet in FACETS:
            a, b = ours[path].get(facet), theirs[path].get(facet)
            if a != b:
                found.append((file, path, facet, a, b))
    return found


def _sample(node: dict[str, Any], root: dict[str, Any], full: bool) -> Any:
    """A valid value for ``node``: required fields only, or every field when ``full``."""
    node = _resolve(node, root)
    if "enum" in node:
        return node["enum"][0]
    t = _types(node) or frozenset()
    if "object" in t:
        props = node.get("properties", {})
        wanted = props if full else node.get("required", ())
        return {name: _sample(props[name], root, full) for name in wanted}
    if "array" in t:
        return [_sample(node["items"], root, full)] if full or node.get("minItems", 0) > 0 else []
    if "integer" in t:
        return 3
    if "number" in t:
        return 8.5
    if "boolean" in t:
        return True
    if node.get("format") == "date-time":
        return "2024-05-01T12:00:00Z"
    if node.get("format") == "uri":
        return "ftp://example.com/upload"
    return "x" * min(5, node.get("maxLength", 5))


def _mutations(instance: Any, node: dict[str, Any], root: dict[str, Any], path: tuple = ()):
    """Yield (path, facet, invalid instance): bad enums, long strings, empty lists, extra properties."""
    node = _resolve(node, root)
    if "enum" in node:
        yield path, "enum", _replace(instance, path, "NotAValue")
    elif "maxLength" in node:
        yield path, "maxLength", _replace(instance, path, "y" * (node["maxLength"] + 1))
    sub = _get(instance, path)
    if isinstance(sub, dict):
        yield path, "additionalProperties", _replace(instance, path, dict(sub, notInTheSpec=1))
        for name, child in node.get("properties", {}).items():
            if name in sub:
                yield from _mutations(instance, child, root, (*path, name))
    elif isinstance(sub, list) and sub:
        if node.get("minItems", 0) > 0:
            yield path, "minItems", _replace(instance, path, [])
        yield from _mutations(instance, node["items"], root, (*path, 0))


def _facet_path(path: tuple) -> str:
    """An instance path, ``("meterValue", 0, "sampledValue")``, as ``meterValue[].sampledValue``."""
    out = ""
    for p in path:
        out += "[]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _get(instance: Any, path: tuple) -> Any:
    for p in path:
        instance = instance[p]
    return instance


def _replace(instance: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    copied = copy.deepcopy(instance)
    _get(copied, path[:-1])[path[-1]] = value
    return copied


def _validator(schema: dict[str, Any]):
    return validators.validator_for(schema)(schema)


class SchemaFilesTests(SynchronousTestCase):
    """The files in ``schemas/``: count, draft-06 validity, ids, titles."""

    def test_exactly_78_files(self) -> None:
        """One request and one response file for each of the 28 core and 11 security actions."""
        found = sorted(p.name for p in SCHEMA_DIR.glob("*.json"))
        expected = sorted(f"{action}{kind}.json" for action, kind, _ in _all_names())
        self.assertEqual(len(expected), 78)
        self.assertEqual(found, expected)

    def test_codec_knows_the_same_actions(self) -> None:
        """The codec's list of OCPP 1.6 Actions (metric labels) is the spec's, core and security."""
        from ocppgw.core.messages import OCPP16_ACTIONS

        self.assertEqual(OCPP16_ACTIONS, frozenset(CORE_ACTIONS + SECURITY_ACTIONS))

    def test_valid_draft6(self) -> None:
        """Every file is a valid draft-06 schema that declares draft-06."""
        for action, kind, _ in _all_names():
            schema = _ours(action, kind)
            self.assertEqual(schema["$schema"], "http://json-schema.org/draft-06/schema#", action + kind)
            Draft6Validator.check_schema(schema)

    def test_ids_and_titles(self) -> None:
        """``$id`` carries the core or security prefix and the file's name; title is the message name."""
        for action, kind, expected_id in _all_names():
            schema = _ours(action, kind)
            self.assertEqual(schema["$id"], expected_id)
            self.assertEqual(schema["$id"].rsplit(":", 1)[1], f"{action}{kind}")
            self.assertEqual(schema["title"], f"{action}{kind}")
            self.assertEqual(schema["type"], "object")

    def test_closed_objects(self) -> None:
        """Every object schema forbids additional properties, as the OCPP-J 1.6 errata asks."""
        for action, kind, _ in _all_names():
            for path, facets in _facets(_ours(action, kind)).items():
                if "properties" in facets:
                    self.assertIs(facets["additionalProperties"], False, f"{action}{kind} {path!r}")


class AgreementTests(SynchronousTestCase):
    """Our schemas against the ``ocpp`` package's v16 schemas, compared by meaning."""

    def test_same_structure(self) -> None:
        """Same property paths, required sets, enums, types, lengths and formats, bar the allow-list."""
        unexpected, used = [], set()
        for action, kind, _ in _all_names():
            for file, path, facet, ours, theirs in _differences(action, kind):
                key = (file, path, facet)
                if key in ALLOWED_DIFFERENCES:
                    used.add(key)
                else:
                    unexpected.append(f"{file} {path or '<root>'} {facet}: ours={ours!r} ocpp={theirs!r}")
        self.assertEqual(unexpected, [], "\n".join(unexpected))
        self.assertEqual(sorted(set(ALLOWED_DIFFERENCES) - used), [], "stale allow-list entries")

    def test_sample_instances(self) -> None:
        """Minimal and full payloads are valid for both; their mutations are rejected by both.

        Where ours is stricter on an allow-listed facet, ocpp accepting the mutation is expected.
        """
        disagreements = []
        for action, kind, _ in _all_names():
            ours_schema, theirs_schema = _ours(action, kind), _theirs(action, kind)
            ours, theirs = _validator(ours_schema), _validator(theirs_schema)
            for full in (False, True):
                instance = _sample(ours_schema, ours_schema, full)
                label = f"{action}{kind} {'full' if full else 'minimal'}"
                self.assertTrue(ours.is_valid(instance), f"{label}: {instance!r}")
                if not theirs.is_valid(instance):
                    disagreements.append(f"{label} accepted by ours only: {instance!r}")
                for path, facet, bad in _mutations(instance, ours_schema, ours_schema):
                    where = f"{label} {'/'.join(map(str, path)) or '<root>'} {facet}"
                    if ours.is_valid(bad):
                        disagreements.append(f"{where}: ours accepts {bad!r}")
                    elif theirs.is_valid(bad):
                        if (f"{action}{kind}.json", _facet_path(path), facet) not in ALLOWED_DIFFERENCES:
                            disagreements.append(f"{where}: ocpp accepts, ours rejects")
        self.assertEqual(disagreements, [], "\n".join(disagreements))


class SpotCheckTests(SynchronousTestCase):
    """A few payloads checked by hand."""

    def setUp(self) -> None:
        self.boot = Draft6Validator(_ours("BootNotification", "Request"))
        self.status = Draft6Validator(_ours("StatusNotification", "Request"))

    def test_boot_notification_valid(self) -> None:
        """A BootNotification with vendor, model and some optional fields is accepted."""
        payload = {"chargePointVendor": "ACME", "chargePointModel": "Wallbox 11", "firmwareVersion": "1.2.3"}
        self.assertEqual(list(self.boot.iter_errors(payload)), [])

    def test_boot_notification_vendor_too_long(self) -> None:
        """chargePointVendor is CiString20: 21 characters are rejected."""
        payload = {"chargePointVendor": "V" * 21, "chargePointModel": "M"}
        errors = list(self.boot.iter_errors(payload))
        self.assertEqual([e.validator for e in errors], ["maxLength"])
        self.assertTrue(self.boot.is_valid({"chargePointVendor": "V" * 20, "chargePointModel": "M"}))

    def test_boot_notification_extra_property(self) -> None:
        """A property the spec does not define is rejected."""
        payload = {"chargePointVendor": "ACME", "chargePointModel": "M", "colour": "red"}
        errors = list(self.boot.iter_errors(payload))
        self.assertEqual([e.validator for e in errors], ["additionalProperties"])

    def test_boot_notification_missing_model(self) -> None:
        """chargePointModel is required."""
        errors = list(self.boot.iter_errors({"chargePointVendor": "ACME"}))
        self.assertEqual([e.validator for e in errors], ["required"])

    def test_status_notification_unknown_error_code(self) -> None:
        """errorCode outside ChargePointErrorCode is rejected; a listed one is accepted."""
        payload = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        self.assertTrue(self.status.is_valid(payload))
        errors = list(self.status.iter_errors(dict(payload, errorCode="SmokeDetected")))
        self.assertEqual([e.validator for e in errors], ["enum"])

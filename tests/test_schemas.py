"""SchemaRegistry: loading the shipped and custom schema directories, lookups, OCPP 1.6 error codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.core import messages
from ocppgw.core.schemas import SchemaLoadError, SchemaRegistry, Violation, shipped_schema_dir

CORE_PREFIX = "urn:OCPP:1.6:2019:12:"
SECURITY_PREFIX = "urn:OCPP:1.6:security:2:2020:3:"

CORE_ACTIONS = (
    "Authorize", "BootNotification", "CancelReservation", "ChangeAvailability", "ChangeConfiguration",
    "ClearCache", "ClearChargingProfile", "DataTransfer", "DiagnosticsStatusNotification",
    "FirmwareStatusNotification", "GetCompositeSchedule", "GetConfiguration", "GetDiagnostics",
    "GetLocalListVersion", "Heartbeat", "MeterValues", "RemoteStartTransaction", "RemoteStopTransaction",
    "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile", "StartTransaction", "StatusNotification",
    "StopTransaction", "TriggerMessage", "UnlockConnector", "UpdateFirmware",
)  # fmt: skip

SECURITY_ACTIONS = (
    "CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage", "GetInstalledCertificateIds",
    "GetLog", "InstallCertificate", "LogStatusNotification", "SecurityEventNotification", "SignCertificate",
    "SignedFirmwareStatusNotification", "SignedUpdateFirmware",
)  # fmt: skip

BOOT = {"chargePointVendor": "VendorX", "chargePointModel": "ModelY"}


def _schema(schema_id: str | None, properties: dict[str, Any], required: list[str] | None = None) -> dict:
    schema: dict[str, Any] = {
        "$schema": "http://json-schema.org/draft-06/schema#",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if schema_id is not None:
        schema["$id"] = schema_id
    if required:
        schema["required"] = required
    return schema


_SHIPPED: list[SchemaRegistry] = []


def _shipped_registry() -> SchemaRegistry:
    """The shipped schemas, compiled once for the whole module."""
    if not _SHIPPED:
        _SHIPPED.append(SchemaRegistry.load(shipped_schema_dir(), CORE_PREFIX))
    return _SHIPPED[0]


class ShippedSchemaTests(SynchronousTestCase):
    """The schemas shipped with the gateway, loaded with the reference gateway's id prefix."""

    def setUp(self) -> None:
        self.registry = _shipped_registry()

    def check(self, action: str, kind: str, payload: Any) -> Violation | None:
        return self.registry.check(action, kind, payload)  # type: ignore[arg-type]

    def test_shipped_dir(self) -> None:
        """shipped_schema_dir() is the checkout's schemas/ when running from source, and holds JSON files."""
        directory = shipped_schema_dir()
        self.assertTrue(directory.is_dir())
        self.assertEqual(directory.resolve(), (Path(__file__).resolve().parent.parent / "schemas").resolve())
        self.assertTrue(any(directory.glob("*.json")))

    def test_every_message_present(self) -> None:
        """Requests and responses of every core and security-extension action: 78 schemas."""
        self.assertEqual(len(self.registry), 78)
        for action in CORE_ACTIONS + SECURITY_ACTIONS:
            for kind in ("Request", "Response"):
                self.assertTrue(self.registry.has(action, kind), f"{action}{kind}")  # type: ignore[arg-type]

    def test_security_extension_by_file_name(self) -> None:
        """SignCertificate's $id has the security extension's prefix; it is still found, by file name."""
        schema_id = json.loads((shipped_schema_dir() / "SignCertificateRequest.json").read_text())["$id"]
        self.assertTrue(schema_id.startswith(SECURITY_PREFIX), schema_id)
        self.assertTrue(self.registry.has("SignCertificate", "Request"))
        self.assertIsNone(self.check("SignCertificate", "Request", {"csr": "-----BEGIN CERTIFICATE REQUEST"}))
        self.assertEqual(
            self.check("SignCertificate", "Request", {}).code, messages.OCCURENCE_CONSTRAINT_VIOLATION
        )

    def test_valid_boot_notification(self) -> None:
        """A valid BootNotification request passes."""
        self.assertIsNone(self.check("BootNotification", "Request", BOOT))

    def test_valid_boot_notification_response(self) -> None:
        """A valid BootNotification confirmation, with an RFC 3339 time, passes."""
        payload = {"status": "Accepted", "currentTime": "2024-01-01T10:00:00.000Z", "interval": 300}
        self.assertIsNone(self.check("BootNotification", "Response", payload))

    def test_type_is_type_constraint_violation(self) -> None:
        """A wrong JSON type is a TypeConstraintViolation naming the property."""
        violation = self.check("BootNotification", "Request", {**BOOT, "chargePointModel": 7})
        self.assertEqual(
            violation,
            Violation(
                messages.TYPE_CONSTRAINT_VIOLATION,
                "BootNotificationRequest: chargePointModel: 7 is not of type 'string'",
            ),
        )

    def test_required_is_occurence_constraint_violation(self) -> None:
        """A missing required property is an OccurenceConstraintViolation (1.6 spelling)."""
        violation = self.check("BootNotification", "Request", {"chargePointVendor": "V"})
        self.assertEqual(
            violation,
            Violation(
                "OccurenceConstraintViolation",
                "BootNotificationRequest: 'chargePointModel' is a required property",
            ),
        )

    def test_additional_property_is_formation_violation(self) -> None:
        """An unknown property is a FormationViolation."""
        violation = self.check("BootNotification", "Request", {**BOOT, "colour": "red"})
        self.assertEqual(violation.code, messages.FORMATION_VIOLATION)
        self.assertIn("colour", violation.description)
        self.assertTrue(violation.description.startswith("BootNotificationRequest: "))

    def test_enum_is_property_constraint_violation(self) -> None:
        """A value outside an enumeration is a PropertyConstraintViolation."""
        payload = {"connectorId": 1, "errorCode": "Melted", "status": "Available"}
        violation = self.check("StatusNotification", "Request", payload)
        self.assertEqual(violation.code, messages.PROPERTY_CONSTRAINT_VIOLATION)
        self.assertTrue(violation.description.startswith("StatusNotificationRequest: errorCode: "))

    def test_max_length_is_property_constraint_violation(self) -> None:
        """A string over its maxLength is a PropertyConstraintViolation; the description stays short."""
        violation = self.check("BootNotification", "Request", {**BOOT, "chargePointVendor": "V" * 1000})
        self.assertEqual(violation.code, messages.PROPERTY_CONSTRAINT_VIOLATION)
        prefix = "BootNotificationRequest: chargePointVendor: "
        self.assertTrue(violation.description.startswith(prefix), violation.description)
        self.assertEqual(len(violation.description), len(prefix) + 300)
        self.assertTrue(violation.description.endswith("..."))

    def test_date_time_format(self) -> None:
        """currentTime must be an RFC 3339 date-time: a date alone or free text is refused."""
        for good in ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00.123+02:00", "2024-02-29T23:59:59z"):
            self.assertIsNone(self.check("Heartbeat", "Response", {"currentTime": good}), good)
        for bad in ("2024-01-01", "yesterday", "2024-13-01T00:00:00Z", "2024-01-01T25:00:00Z", ""):
            violation = self.check("Heartbeat", "Response", {"currentTime": bad})
            self.assertEqual(violation.code, messages.PROPERTY_CONSTRAINT_VIOLATION, bad)
            self.assertTrue(violation.description.startswith("HeartbeatResponse: currentTime: "))

    def test_unknown_action(self) -> None:
        """An Action without a schema: has() is False and check() passes it (None)."""
        self.assertFalse(self.registry.has("FlyToTheMoon", "Request"))
        self.assertIsNone(self.check("FlyToTheMoon", "Request", {"anything": [1, 2]}))
        self.assertFalse(self.registry.has("BootNotification", "Confirmation"))  # type: ignore[arg-type]

    def test_other_prefix_still_finds_files_by_name(self) -> None:
        """With a prefix no file uses, every schema is still found by its file name."""
        registry = SchemaRegistry.load(shipped_schema_dir(), "urn:nobody:")
        self.assertEqual(len(registry), 78)
        self.assertEqual(
            registry.check("BootNotification", "Request", {}).code, messages.OCCURENCE_CONSTRAINT_VIOLATION
        )


class CustomSchemaDirTests(SynchronousTestCase):
    """Registries built from small schema directories written for each test."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def write(self, name: str, schema: Any) -> None:
        text = schema if isinstance(schema, str) else json.dumps(schema)
        (self.directory / name).write_text(text, encoding="utf-8")

    def load(self, prefix: str = CORE_PREFIX) -> SchemaRegistry:
        return SchemaRegistry.load(self.directory, prefix)

    def test_empty_directory(self) -> None:
        """A directory without schemas gives an empty registry."""
        self.write("README.txt", "not a schema")
        registry = self.load()
        self.assertEqual(len(registry), 0)
        self.assertIsNone(registry.check("Heartbeat", "Request", {"x": 1}))

    def test_decimal_multiple_of(self) -> None:
        """multipleOf 0.1 is checked in decimal: 3.3 passes (binary floats would refuse it), 3.33 fails."""
        self.write(
            "SetLimitRequest.json",
            _schema(CORE_PREFIX + "SetLimitRequest", {"limit": {"type": "number", "multipleOf": 0.1}}),
        )
        registry = self.load()
        for good in (3.3, 0.3, -0.3, 3, 0, 1234.5, 0.1):
            self.assertIsNone(registry.check("SetLimit", "Request", {"limit": good}), good)
        violation = registry.check("SetLimit", "Request", {"limit": 3.33})
        self.assertEqual(
            violation,
            Violation(
                messages.PROPERTY_CONSTRAINT_VIOLATION,
                "SetLimitRequest: limit: 3.33 is not a multiple of 0.1",
            ),
        )
        self.assertEqual(
            registry.check("SetLimit", "Request", {"limit": "3.3"}).code, messages.TYPE_CONSTRAINT_VIOLATION
        )

    def test_integer_multiple_of(self) -> None:
        """An integer step works too: 10 passes, 15 fails."""
        self.write("StepRequest.json", _schema(None, {"n": {"type": "integer", "multipleOf": 10}}))
        registry = self.load()
        self.assertIsNone(registry.check("Step", "Request", {"n": 10}))
        self.assertEqual(
            registry.check("Step", "Request", {"n": 15}).code, messages.PROPERTY_CONSTRAINT_VIOLATION
        )

    def test_custom_prefix(self) -> None:
        """A schema whose file name says nothing is found by its $id under a custom prefix."""
        self.write("one.json", _schema("urn:acme:v1:FooRequest", {"a": {"type": "string"}}, ["a"]))
        self.assertTrue(self.load("urn:acme:v1:").has("Foo", "Request"))
        self.assertIsNone(self.load("urn:acme:v1:").check("Foo", "Request", {"a": "x"}))
        self.assertEqual(
            self.load("urn:acme:v1:").check("Foo", "Request", {}).code,
            messages.OCCURENCE_CONSTRAINT_VIOLATION,
        )
        self.assertFalse(self.load().has("Foo", "Request"))

    def test_draft4_id_keyword(self) -> None:
        """A draft-04 schema's ``id`` is read like ``$id``."""
        schema = _schema(None, {"a": {"type": "string"}}, ["a"])
        schema["$schema"] = "http://json-schema.org/draft-04/schema#"
        schema["id"] = "urn:acme:BarResponse"
        self.write("x.json", schema)
        registry = self.load("urn:acme:")
        self.assertTrue(registry.has("Bar", "Response"))
        self.assertEqual(registry.check("Bar", "Response", {}).code, messages.OCCURENCE_CONSTRAINT_VIOLATION)

    def test_file_name_when_id_has_other_prefix(self) -> None:
        """A file whose $id carries another prefix is found by its file name."""
        self.write("BazResponse.json", _schema("urn:other:2:BazResponse", {"a": {"type": "integer"}}))
        registry = self.load()
        self.assertTrue(registry.has("Baz", "Response"))
        self.assertFalse(registry.has("Baz", "Request"))
        self.assertEqual(
            registry.check("Baz", "Response", {"a": "x"}).code, messages.TYPE_CONSTRAINT_VIOLATION
        )

    def test_id_wins_over_file_name(self) -> None:
        """An $id under the prefix naming a message beats a file of the same name."""
        self.write("FooRequest.json", _schema("urn:other:Unrelated", {"a": {"type": "integer"}}, ["a"]))
        self.write("zz.json", _schema(CORE_PREFIX + "FooRequest", {"b": {"type": "integer"}}, ["b"]))
        registry = self.load()
        self.assertEqual(len(registry), 1)
        self.assertIsNone(registry.check("Foo", "Request", {"b": 1}))
        violation = registry.check("Foo", "Request", {"a": 1})
        self.assertEqual(violation.code, messages.FORMATION_VIOLATION)

    def test_keyword_codes(self) -> None:
        """Each failing keyword maps to its OCPP 1.6 error code."""
        self.write(
            "KRequest.json",
            _schema(
                None,
                {
                    "t": {"type": "integer"},
                    "e": {"type": "string", "enum": ["A", "B"]},
                    "m": {"type": "string", "maxLength": 3},
                    "lo": {"type": "integer", "minimum": 0},
                    "list": {"type": "array", "minItems": 1, "maxItems": 2},
                    "p": {"type": "string", "pattern": "^[0-9]+$"},
                },
            ),
        )
        registry = self.load()
        expected = {
            "t": ("x", messages.TYPE_CONSTRAINT_VIOLATION),
            "e": ("C", messages.PROPERTY_CONSTRAINT_VIOLATION),
            "m": ("abcd", messages.PROPERTY_CONSTRAINT_VIOLATION),
            "lo": (-1, messages.PROPERTY_CONSTRAINT_VIOLATION),
            "list": ([], messages.OCCURENCE_CONSTRAINT_VIOLATION),
            "p": ("12a", messages.PROPERTY_CONSTRAINT_VIOLATION),
        }
        for key, (value, code) in expected.items():
            violation = registry.check("K", "Request", {key: value})
            self.assertEqual(violation.code, code, key)
            self.assertTrue(violation.description.startswith(f"KRequest: {key}: "), violation.description)
        self.assertEqual(
            registry.check("K", "Request", {"list": [1, 2, 3]}).code, messages.OCCURENCE_CONSTRAINT_VIOLATION
        )
        self.assertEqual(registry.check("K", "Request", {"zz": 1}).code, messages.FORMATION_VIOLATION)
        self.assertIsNone(
            registry.check("K", "Request", {"t": 1, "e": "A", "m": "abc", "list": [1], "p": "1"})
        )

    def test_nested_path(self) -> None:
        """The description names the failing property's full path."""
        self.write(
            "NRequest.json",
            _schema(
                None,
                {
                    "outer": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"v": {"type": "integer"}}},
                    }
                },
            ),
        )
        violation = self.load().check("N", "Request", {"outer": [{"v": 1}, {"v": "x"}]})
        self.assertEqual(
            violation,
            Violation(
                messages.TYPE_CONSTRAINT_VIOLATION, "NRequest: outer/1/v: 'x' is not of type 'integer'"
            ),
        )

    def test_broken_json_names_file(self) -> None:
        """A file that is not JSON stops loading with SchemaLoadError naming it."""
        self.write("GoodRequest.json", _schema(None, {}))
        self.write("BadRequest.json", "{not json")
        error = self.assertRaises(SchemaLoadError, self.load)
        self.assertIn(str(self.directory / "BadRequest.json") + ": ", str(error))
        self.assertNotIn("GoodRequest", str(error))

    def test_invalid_schema_names_file(self) -> None:
        """A JSON file that is not a valid schema stops loading with SchemaLoadError naming it."""
        self.write("BadRequest.json", {"type": 12})
        error = self.assertRaises(SchemaLoadError, self.load)
        self.assertTrue(str(error).startswith(str(self.directory / "BadRequest.json") + ": "), str(error))

    def test_non_object_schema_names_file(self) -> None:
        """A file holding a number, boolean, null, string or array is a SchemaLoadError, not a crash."""
        for text in ("123", "true", "false", "null", '"abc"', "[]"):
            self.write("BadRequest.json", text)
            error = self.assertRaises(SchemaLoadError, self.load)
            self.assertTrue(str(error).startswith(str(self.directory / "BadRequest.json") + ": "), text)

    def test_not_utf8_names_file(self) -> None:
        """A file that is not UTF-8 is a SchemaLoadError naming it."""
        (self.directory / "BadRequest.json").write_bytes(b'{"title": "\xff"}')
        error = self.assertRaises(SchemaLoadError, self.load)
        self.assertIn("BadRequest.json", str(error))

    def test_every_broken_file_reported(self) -> None:
        """All broken files are named in one error, one problem per file."""
        self.write("ARequest.json", "{")
        self.write("BRequest.json", "null")
        self.write("CRequest.json", _schema(None, {}))
        error = self.assertRaises(SchemaLoadError, self.load)
        problems = str(error).split("; ")
        self.assertEqual(len(problems), 2, str(error))
        self.assertTrue(problems[0].startswith(str(self.directory / "ARequest.json")))
        self.assertTrue(problems[1].startswith(str(self.directory / "BRequest.json")))

    def test_missing_directory(self) -> None:
        """A directory that does not exist holds no schemas."""
        self.assertEqual(len(SchemaRegistry.load(self.directory / "nope", CORE_PREFIX)), 0)

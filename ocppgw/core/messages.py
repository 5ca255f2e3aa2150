"""Sans-IO OCPP-J 1.6 codec: WebSocket text frames and MQTT envelopes <-> messages.

Everything here is pure: parse errors are exceptions that carry what is needed
to answer (the UniqueId when it could be read, an OCPP 1.6 error code), so the
caller decides whether an answer is allowed at all.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

CALL = 2
CALLRESULT = 3
CALLERROR = 4

# OCPP-J 1.6 section 4.2.3, with the 1.6 spellings OCA will not fix.
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
INTERNAL_ERROR = "InternalError"
PROTOCOL_ERROR = "ProtocolError"
SECURITY_ERROR = "SecurityError"
FORMATION_VIOLATION = "FormationViolation"
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"
TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
GENERIC_ERROR = "GenericError"

ERROR_CODES = frozenset(
    {
        NOT_IMPLEMENTED,
        NOT_SUPPORTED,
        INTERNAL_ERROR,
        PROTOCOL_ERROR,
        SECURITY_ERROR,
        FORMATION_VIOLATION,
        PROPERTY_CONSTRAINT_VIOLATION,
        OCCURENCE_CONSTRAINT_VIOLATION,
        TYPE_CONSTRAINT_VIOLATION,
        GENERIC_ERROR,
    }
)


@dataclass(frozen=True, slots=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallResult:
    unique_id: str
    payload: dict[str, Any]
    action: str | None = None


@dataclass(frozen=True, slots=True)
class CallError:
    unique_id: str
    code: str
    description: str
    details: Any = field(default_factory=dict)
    action: str | None = None


Message = Call | CallResult | CallError


class FrameError(Exception):
    """A frame from a charge point that is not valid OCPP-J.

    ``unique_id`` is set when one could be read; ``answerable`` is false for
    frames that claim to be a CallResult or CallError, which must never be
    answered with a CallError.
    """

    def __init__(self, code: str, description: str, unique_id: str | None, answerable: bool) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.unique_id = unique_id
        self.answerable = answerable and unique_id is not None


class EnvelopeError(Exception):
    """An MQTT envelope from the central system that cannot become a frame."""

    def __init__(self, description: str, unique_id: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.unique_id = unique_id


# Far deeper than any OCPP 1.6 message, far shallower than the interpreter's
# recursion limit: a value that decodes must also encode further down the stack.
MAX_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# Built once: json.loads and json.dumps with keyword arguments build a new decoder or encoder on
# every call, which costs more than decoding a small frame.  Both are stateless and reentrant.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

# orjson reads an integer beyond 64 bits as a float; such numbers (19 digits and more) go to the
# standard library, which keeps them exact.
_LONG_DIGITS = re.compile(r"\d{19}")
_LONG_DIGITS_BYTES = re.compile(rb"\d{19}")


def _loads(text: str | bytes) -> Any:
    """A JSON value from text or UTF-8 bytes, as the standard library reads it (``_std_loads``).

    orjson reads it when it can, several times faster; anything it refuses (an error, a BOM, a lone
    surrogate, UTF-16) is read again by the standard library, so errors and what is accepted stay
    the standard library's. The tests compare the two on valid and invalid texts."""
    long_digits = _LONG_DIGITS if isinstance(text, str) else _LONG_DIGITS_BYTES
    if long_digits.search(text) is None:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
        else:
            return _within_depth(value, text)
    return _std_loads(text)


def _std_loads(text: str | bytes) -> Any:
    # json.loads step by step, with the decoder built once.
    if isinstance(text, str) and not text.startswith("\ufeff"):
        value = _DECODER.decode(text)
    elif isinstance(text, bytes | bytearray):
        # An object or array whose second byte is not NUL is UTF-8 to detect_encoding: skip asking it.
        utf8 = len(text) > 1 and text[0] in _OPENERS and text[1] != 0
        value = _DECODER.decode(text.decode("utf-8" if utf8 else json.detect_encoding(text), "surrogatepass"))
    else:  # a BOM or not JSON text: json.loads raises, in its own words
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    return _within_depth(value, text)


def _within_depth(value: Any, text: str | bytes) -> Any:
    """``value`` (read from ``text``), once it is known to nest at most MAX_DEPTH levels deep."""
    if isinstance(value, list | dict) and _may_nest_deeper(text):
        _check_depth(value)
    return value


_OPENERS = (ord("{"), ord("["))


def _may_nest_deeper(text: str | bytes) -> bool:
    """Cheap test: with at most MAX_DEPTH brackets, no value can nest deeper."""
    if isinstance(text, str):
        return text.count("[") + text.count("{") > MAX_DEPTH
    return text.count(b"[") + text.count(b"{") > MAX_DEPTH


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, list | dict))


def _dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII as is. orjson writes it; what it refuses (an integer beyond 64
    bits, a lone surrogate) the standard library writes (``_std_dumps``)."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        return _std_dumps(value)


def _std_dumps(value: Any) -> str:
    # Only what orjson refuses comes here (rare), so the public encode is fast enough: rebuilding the
    # C encoder once per call is a microsecond or two that a usual frame never pays.
    text = _ENCODER.encode(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (from a "\ud800" escape) cannot be UTF-8: keep it escaped.
            text = json.dumps(value, separators=(",", ":"))
    return text


def _claims_reply(type_id: Any) -> bool:
    """A MessageTypeId that means CallResult or CallError, even when mistyped ("3", 4.0)."""
    if isinstance(type_id, str):
        return type_id.strip() in ("3", "4")
    return isinstance(type_id, int | float) and not isinstance(type_id, bool) and type_id in (3, 4)


# The UniqueId a CallError carries when the one it answers is not repeated (longer than allowed):
# what OCPP-J 2.0.1 section 4.2.3 prescribes for an unreadable one. No charge point can match it
# to a request, and unlike a prefix it can never match the wrong one.
UNREADABLE_ID = "-1"

_WS = r"[ \t\n\r]*"
# The start of a frame up to its UniqueId, read when the whole frame is not JSON the codec accepts:
# [<integer>,"<JSON string>", (a BOM before it, JSON whitespace between). The string's characters are
# alternatives that cannot overlap, so a failed match backtracks linearly.
_FRAME_START = re.compile(
    rf"\ufeff?{_WS}\[{_WS}(-?(?:0|[1-9][0-9]{{0,18}})){_WS},{_WS}"
    r'"((?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*)'
    rf'("{_WS},)?'
)
# How far into a frame its UniqueId is looked for when no limit applies.
_RECOVERY_WINDOW = 8192


def decode_frame(text: str, max_unique_id_length: int | None = None) -> Message:
    """Parse one OCPP-J text frame; raise FrameError when it is not valid.

    A Call's UniqueId longer than ``max_unique_id_length`` is answered (FormationViolation) with
    UNREADABLE_ID rather than echoed."""
    try:
        value = _loads(text)
    except (ValueError, RecursionError) as e:
        raise _unparsable(text, f"Invalid JSON: {e}", max_unique_id_length) from None
    if not isinstance(value, list) or not value:
        raise FrameError(FORMATION_VIOLATION, "A frame must be a non-empty JSON array", None, False)
    type_id = value[0]
    unique_id = value[1] if len(value) > 1 and isinstance(value[1], str) else None
    limit = max_unique_id_length
    if unique_id is not None and limit is not None and len(unique_id) > limit and not _claims_reply(type_id):
        raise _too_long(limit)
    if type(type_id) is not int or type_id not in (CALL, CALLRESULT, CALLERROR):
        raise FrameError(
            PROTOCOL_ERROR,
            f"Unknown MessageTypeId {_dumps(type_id)[:40]}",
            unique_id,
            not _claims_reply(type_id),
        )
    answerable = type_id == CALL
    if len(value) > 1 and unique_id is None:
        raise FrameError(TYPE_CONSTRAINT_VIOLATION, "UniqueId must be a string", None, False)
    if type_id == CALL:
        if len(value) != 4:
            raise FrameError(FORMATION_VIOLATION, "A Call must have 4 elements", unique_id, answerable)
        _, _, action, payload = value
        if not unique_id:
            raise FrameError(FORMATION_VIOLATION, "UniqueId must not be empty", unique_id, answerable)
        if not isinstance(action, str) or not action:
            raise FrameError(TYPE_CONSTRAINT_VIOLATION, "Action must be a non-empty string", unique_id, True)
        if not isinstance(payload, dict):
            raise FrameError(TYPE_CONSTRAINT_VIOLATION, "Payload must be a JSON object", unique_id, True)
        return Call(unique_id, action, payload)
    if type_id == CALLRESULT:
        if len(value) != 3:
            raise FrameError(FORMATION_VIOLATION, "A CallResult must have 3 elements", unique_id, False)
        if not isinstance(value[2], dict):
            raise FrameError(TYPE_CONSTRAINT_VIOLATION, "Payload must be a JSON object", unique_id, False)
        return CallResult(unique_id or "", value[2])
    if len(value) != 5:
        raise FrameError(FORMATION_VIOLATION, "A CallError must have 5 elements", unique_id, False)
    _, _, code, description, details = value
    if not isinstance(code, str) or not isinstance(description, str):
        raise FrameError(
            TYPE_CONSTRAINT_VIOLATION, "ErrorCode and ErrorDescription must be strings", unique_id, False
        )
    return CallError(unique_id or "", code, description, details)


def _too_long(limit: int) -> FrameError:
    """The answer to a frame that would be answered but whose UniqueId is too long to echo."""
    return FrameError(FORMATION_VIOLATION, f"UniqueId longer than {limit} characters", UNREADABLE_ID, True)


def _unparsable(text: str, description: str, limit: int | None) -> FrameError:
    """The error for a frame that is not JSON the codec accepts (too deep, NaN, a BOM...): answerable
    like a parsed frame when it starts ``[<type>,"<UniqueId>",``."""
    window = text[: _RECOVERY_WINDOW if limit is None else 6 * limit + 96]
    match = _FRAME_START.match(window)
    if match is None:
        return FrameError(FORMATION_VIOLATION, description, None, False)
    type_id = int(match[1])
    if match[3] is None:
        # The string ran to the end of the window: escaped, it is over 6 * limit characters long, so
        # at least ``limit`` + 1 once read. Anything else stopped it: no UniqueId is readable.
        if limit is not None and match.end() == len(window) < len(text) and not _claims_reply(type_id):
            return _too_long(limit)
        return FrameError(FORMATION_VIOLATION, description, None, False)
    unique_id: str = _DECODER.decode(f'"{match[2]}"')
    if _claims_reply(type_id):
        return FrameError(FORMATION_VIOLATION, description, unique_id, False)
    if limit is not None and len(unique_id) > limit:
        return _too_long(limit)
    if type_id != CALL:
        return FrameError(PROTOCOL_ERROR, f"Unknown MessageTypeId {type_id}", unique_id, True)
    return FrameError(FORMATION_VIOLATION, description, unique_id, True)


def encode_frame(message: Message) -> str:
    """The OCPP-J text frame for a message."""
    if isinstance(message, Call):
        return _dumps([CALL, message.unique_id, message.action, message.payload])
    if isinstance(message, CallResult):
        return _dumps([CALLRESULT, message.unique_id, message.payload])
    return _dumps([CALLERROR, message.unique_id, message.code, message.description, message.details])


def encode_envelope(message: Message) -> bytes:
    """The JSON envelope published on MQTT, as the reference gateway shapes it."""
    if isinstance(message, Call):
        body: dict[str, Any] = {
            "MessageTypeId": CALL,
            "UniqueId": message.unique_id,
            "Action": message.action,
            "Payload": message.payload,
        }
    elif isinstance(message, CallResult):
        body = {"MessageTypeId": CALLRESULT, "UniqueId": message.unique_id}
        if message.action is not None:
            body["Action"] = message.action
        body["Payload"] = message.payload
    else:
        body = {"MessageTypeId": CALLERROR, "UniqueId": message.unique_id}
        if message.action is not None:
            body["Action"] = message.action
        body["ErrorCode"] = message.code
        body["ErrorDescription"] = message.description
        body["ErrorDetails"] = message.details
    return _dumps(body).encode("utf-8")


def decode_envelope(data: bytes) -> Message:
    """Parse an envelope the central system published; raise EnvelopeError."""
    try:
        body = _loads(data)
    except (ValueError, RecursionError) as e:
        raise EnvelopeError(f"invalid JSON: {e}") from None
    if not isinstance(body, dict):
        raise EnvelopeError("an envelope must be a JSON object")
    unique_id = body.get("UniqueId")
    if not isinstance(unique_id, str) or not unique_id:
        raise EnvelopeError("UniqueId must be a non-empty string")
    type_id = body.get("MessageTypeId")
    if type(type_id) is not int or type_id not in (CALL, CALLRESULT, CALLERROR):
        raise EnvelopeError("MessageTypeId must be 2, 3 or 4", unique_id)
    action = body.get("Action")
    if action is not None and (not isinstance(action, str) or not action):
        raise EnvelopeError("Action must be a non-empty string", unique_id)
    if type_id in (CALL, CALLRESULT):
        payload = body.get("Payload")
        if not isinstance(payload, dict):
            raise EnvelopeError("Payload must be a JSON object", unique_id)
        if type_id == CALL:
            if action is None:
                raise EnvelopeError("a Call needs an Action", unique_id)
            return Call(unique_id, action, payload)
        return CallResult(unique_id, payload, action)
    code = body.get("ErrorCode")
    if not isinstance(code, str) or code not in ERROR_CODES:
        raise EnvelopeError("ErrorCode must be an OCPP 1.6 error code", unique_id)
    description = body.get("ErrorDescription", "")
    if not isinstance(description, str):
        raise EnvelopeError("ErrorDescription must be a string", unique_id)
    details = body.get("ErrorDetails", {})
    if not isinstance(details, dict):
        raise EnvelopeError("ErrorDetails must be a JSON object", unique_id)
    return CallError(unique_id, code, description, details, action)

# The Actions of OCPP 1.6 (core and the security extension). Metrics label by Action; anything else a
# peer sends is labelled "other", so a hostile charge point cannot grow the number of series.
OCPP16_ACTIONS = frozenset(
    (
        "Authorize",
        "BootNotification",
        "CancelReservation",
        "CertificateSigned",
        "ChangeAvailability",
        "ChangeConfiguration",
        "ClearCache",
        "ClearChargingProfile",
        "DataTransfer",
        "DeleteCertificate",
        "DiagnosticsStatusNotification",
        "ExtendedTriggerMessage",
        "FirmwareStatusNotification",
        "GetCompositeSchedule",
        "GetConfiguration",
        "GetDiagnostics",
        "GetInstalledCertificateIds",
        "GetLocalListVersion",
        "GetLog",
        "Heartbeat",
        "InstallCertificate",
        "LogStatusNotification",
        "MeterValues",
        "RemoteStartTransaction",
        "RemoteStopTransaction",
        "ReserveNow",
        "Reset",
        "SecurityEventNotification",
        "SendLocalList",
        "SetChargingProfile",
        "SignCertificate",
        "SignedFirmwareStatusNotification",
        "SignedUpdateFirmware",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
        "TriggerMessage",
        "UnlockConnector",
        "UpdateFirmware",
    )
)


def action_label(action: str | None) -> str:
    """``action`` as a metric label: an OCPP 1.6 Action, ``other``, or ``-`` (no Action)."""
    if not action:
        return "-"
    return action if action in OCPP16_ACTIONS else "other"

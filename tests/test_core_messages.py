"""The sans-IO OCPP-J codec: frames and MQTT envelopes, their errors and round trips."""

from __future__ import annotations

import json
import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.core import messages
from ocppgw.core.messages import (
    Call,
    CallError,
    CallResult,
    EnvelopeError,
    FrameError,
    decode_envelope,
    decode_frame,
    encode_envelope,
    encode_frame,
)

BOOT_PAYLOAD = {"chargePointVendor": "VendorX", "chargePointModel": "ModelY"}


def _strict_loads(data: str | bytes) -> Any:
    """json.loads that refuses NaN and Infinity, as any strict consumer would."""

    def refuse(name: str) -> Any:
        raise ValueError(name)

    return json.loads(data, parse_constant=refuse)


class DecodeFrameTests(SynchronousTestCase):
    """decode_frame turns valid OCPP-J text frames into messages."""

    def test_call(self) -> None:
        """A four-element frame with MessageTypeId 2 is a Call."""
        text = json.dumps([2, "19223201", "BootNotification", BOOT_PAYLOAD])
        self.assertEqual(decode_frame(text), Call("19223201", "BootNotification", BOOT_PAYLOAD))

    def test_call_result(self) -> None:
        """A three-element frame with MessageTypeId 3 is a CallResult without an Action."""
        message = decode_frame('[3,"19223201",{"status":"Accepted","interval":300}]')
        self.assertEqual(message, CallResult("19223201", {"status": "Accepted", "interval": 300}))
        self.assertIsNone(message.action)

    def test_call_error(self) -> None:
        """A five-element frame with MessageTypeId 4 is a CallError, details kept as sent."""
        message = decode_frame('[4,"u1","NotImplemented","no such action",{"hint":"x"}]')
        self.assertEqual(message, CallError("u1", "NotImplemented", "no such action", {"hint": "x"}))
        self.assertIsNone(message.action)

    def test_whitespace(self) -> None:
        """Whitespace between tokens and around the frame is allowed."""
        message = decode_frame(' \n[ 2 ,\t"u" , "Heartbeat" , { } ]\r\n')
        self.assertEqual(message, Call("u", "Heartbeat", {}))

    def test_unicode(self) -> None:
        """Non-ASCII text, raw or escaped, survives decoding unchanged."""
        message = decode_frame(
            '[2,"ü-1","DataTransfer",{"vendorId":"Ωmega","data":"\\u00e9\\ud83d\\ude00✓"}]'
        )
        self.assertEqual(message, Call("ü-1", "DataTransfer", {"vendorId": "Ωmega", "data": "é😀✓"}))

    def test_numbers(self) -> None:
        """Integers stay integers, decimals floats; big finite numbers are accepted."""
        message = decode_frame('[2,"u","A",{"i":10,"f":32.5,"e":1e300,"n":-0.0}]')
        self.assertEqual(message.payload, {"i": 10, "f": 32.5, "e": 1e300, "n": -0.0})
        self.assertIs(type(message.payload["i"]), int)

    def test_nesting_within_limit(self) -> None:
        """Payloads nested up to the depth limit decode."""
        depth = messages.MAX_DEPTH - 2  # the frame array and the payload object are two levels
        inner: Any = 1
        for _ in range(depth):
            inner = {"a": inner}
        message = decode_frame(json.dumps([2, "u", "A", {"p": inner}]))
        self.assertEqual(message.payload, {"p": inner})

    def test_many_brackets_but_shallow(self) -> None:
        """Many brackets side by side are not deep nesting."""
        payload = {"meterValue": [{"sampledValue": [{"value": str(i)}]} for i in range(200)]}
        message = decode_frame(json.dumps([2, "u", "MeterValues", payload]))
        self.assertEqual(message.payload, payload)


class FrameErrorTests(SynchronousTestCase):
    """Every way decode_frame refuses a frame, with the code, UniqueId and answerability."""

    def assertFrameError(
        self, text: str, code: str, unique_id: str | None, answerable: bool, description: str | None = None
    ) -> FrameError:
        error = self.assertRaises(FrameError, decode_frame, text)
        self.assertEqual(
            (error.code, error.unique_id, error.answerable),
            (code, unique_id, answerable),
            f"frame {text[:80]!r}: {error.description}",
        )
        self.assertIn(error.code, messages.ERROR_CODES)
        if description is not None:
            self.assertEqual(error.description, description)
        self.assertEqual(str(error), error.description)
        return error

    def test_invalid_json(self) -> None:
        """Text that is not JSON is a FormationViolation, answered when a Call's UniqueId starts it."""
        error = self.assertFrameError('[2,"u","Heartbeat",{}', messages.FORMATION_VIOLATION, "u", True)
        self.assertTrue(error.description.startswith("Invalid JSON: "), error.description)
        error = self.assertFrameError('{2,"u","Heartbeat",{}', messages.FORMATION_VIOLATION, None, False)
        self.assertTrue(error.description.startswith("Invalid JSON: "), error.description)

    def test_empty_text(self) -> None:
        """An empty frame is invalid JSON."""
        self.assertFrameError("", messages.FORMATION_VIOLATION, None, False)

    def test_trailing_garbage(self) -> None:
        """Text after the frame makes it invalid JSON."""
        self.assertFrameError('[2,"u","Heartbeat",{}] x', messages.FORMATION_VIOLATION, "u", True)

    def test_nan_and_infinity(self) -> None:
        """NaN, Infinity and -Infinity are not JSON and are refused."""
        for constant in ("NaN", "Infinity", "-Infinity"):
            error = self.assertFrameError(
                f'[2,"u","MeterValues",{{"v":{constant}}}]', messages.FORMATION_VIOLATION, "u", True
            )
            self.assertIn(constant.lstrip("-"), error.description)

    def test_overflowing_number(self) -> None:
        """A number too large for a double (it would re-encode as Infinity) is refused."""
        for number in ("1e999", "-1e400", "1" + "0" * 400 + ".0"):
            error = self.assertFrameError(
                f'[2,"u","MeterValues",{{"v":{number}}}]', messages.FORMATION_VIOLATION, "u", True
            )
            self.assertIn("out of range", error.description)

    def test_recursion_error(self) -> None:
        """Nesting deep enough to exhaust the parser's recursion is a FormationViolation."""
        for opener in ("[", '{"a":'):
            self.assertFrameError(opener * 100_000, messages.FORMATION_VIOLATION, None, False)
            closer = "]" if opener == "[" else "}"
            self.assertFrameError(
                opener * 5000 + "1" + closer * 5000, messages.FORMATION_VIOLATION, None, False
            )

    def test_nesting_beyond_limit(self) -> None:
        """A value nested deeper than MAX_DEPTH is refused although the parser could read it."""
        inner: Any = 1
        for _ in range(messages.MAX_DEPTH - 1):
            inner = [inner]
        error = self.assertFrameError(
            json.dumps([2, "u", "A", {"p": inner}]), messages.FORMATION_VIOLATION, "u", True
        )
        self.assertIn(f"nested deeper than {messages.MAX_DEPTH} levels", error.description)

    def test_deepest_frame_encodes_deep_in_the_stack(self) -> None:
        """The deepest frame that decodes still encodes as an envelope from 500 stack frames further down."""
        inner: Any = 1
        for _ in range(messages.MAX_DEPTH - 3):
            inner = {"a": inner}
        call = decode_frame(json.dumps([2, "u", "A", {"p": inner}]))

        def deeper(levels: int) -> bytes:
            return encode_envelope(call) if levels == 0 else deeper(levels - 1)

        self.assertEqual(decode_envelope(deeper(500)), call)

    def test_deep_type_id(self) -> None:
        """A deeply nested MessageTypeId can neither crash the error text nor be answered at length."""
        depth = 900
        text = "[" + "[" * depth + "]" * depth + ',"u"]'
        self.assertFrameError(text, messages.FORMATION_VIOLATION, None, False)

    def test_long_type_id_description_bounded(self) -> None:
        """The description quotes at most 40 characters of an unknown MessageTypeId."""
        error = self.assertFrameError(
            json.dumps(["x" * 1000, "u", "A", {}]), messages.PROTOCOL_ERROR, "u", True
        )
        self.assertEqual(error.description, "Unknown MessageTypeId " + ('"' + "x" * 39))

    def test_not_an_array(self) -> None:
        """An object, a string, a number or null is not a frame."""
        for text in ('{"MessageTypeId":2}', '"frame"', "2", "null", "true"):
            self.assertFrameError(
                text, messages.FORMATION_VIOLATION, None, False, "A frame must be a non-empty JSON array"
            )

    def test_empty_array(self) -> None:
        """An empty array is not a frame."""
        self.assertFrameError(
            "[]", messages.FORMATION_VIOLATION, None, False, "A frame must be a non-empty JSON array"
        )

    def test_unknown_type_id(self) -> None:
        """An unknown MessageTypeId is a ProtocolError, answered when the UniqueId is readable."""
        for type_id in ("5", "0", "-1", "1", "2.5", "null", "true", "false", '"2"', '"Call"', "[2]", "{}"):
            self.assertFrameError(
                f'[{type_id},"u","Heartbeat",{{}}]',
                messages.PROTOCOL_ERROR,
                "u",
                True,
                f"Unknown MessageTypeId {json.dumps(json.loads(type_id), separators=(',', ':'))}",
            )

    def test_float_two_is_unknown(self) -> None:
        """2.0 is not the integer 2: a ProtocolError, answerable since it is not a reply."""
        self.assertFrameError('[2.0,"u","Heartbeat",{}]', messages.PROTOCOL_ERROR, "u", True)

    def test_mistyped_reply_type_never_answerable(self) -> None:
        """A CallResult or CallError whose MessageTypeId is a string or float is never answered."""
        for frame in (
            '["3","u",{}]',
            '[" 3 ","u",{}]',
            '[3.0,"u",{}]',
            '["4","u","GenericError","x",{}]',
            '[4.0,"u","GenericError","x",{}]',
            '["4","u"]',
        ):
            self.assertFrameError(frame, messages.PROTOCOL_ERROR, "u", False)

    def test_unknown_type_id_without_unique_id(self) -> None:
        """Without a string UniqueId an unknown MessageTypeId cannot be answered."""
        self.assertFrameError("[5]", messages.PROTOCOL_ERROR, None, False)
        self.assertFrameError("[5,7]", messages.PROTOCOL_ERROR, None, False)
        self.assertFrameError('[5,null,"A",{}]', messages.PROTOCOL_ERROR, None, False)

    def test_unique_id_not_a_string(self) -> None:
        """A non-string UniqueId is a TypeConstraintViolation that cannot be answered."""
        for frame in ('[2,7,"Heartbeat",{}]', "[3,7,{}]", '[4,null,"GenericError","",{}]', "[2,[],1,2]"):
            self.assertFrameError(
                frame, messages.TYPE_CONSTRAINT_VIOLATION, None, False, "UniqueId must be a string"
            )

    def test_call_arity(self) -> None:
        """A Call with other than four elements is a FormationViolation, answerable when it has a UniqueId."""
        self.assertFrameError("[2]", messages.FORMATION_VIOLATION, None, False, "A Call must have 4 elements")
        for frame in ('[2,"u"]', '[2,"u","Heartbeat"]', '[2,"u","Heartbeat",{},{}]'):
            self.assertFrameError(
                frame, messages.FORMATION_VIOLATION, "u", True, "A Call must have 4 elements"
            )

    def test_call_empty_unique_id(self) -> None:
        """An empty UniqueId is a FormationViolation."""
        self.assertFrameError(
            '[2,"","Heartbeat",{}]', messages.FORMATION_VIOLATION, "", True, "UniqueId must not be empty"
        )

    def test_call_bad_action(self) -> None:
        """A missing, empty or non-string Action is a TypeConstraintViolation, answered."""
        for action in ('""', "7", "null", '["Heartbeat"]', "{}"):
            self.assertFrameError(
                f'[2,"u",{action},{{}}]',
                messages.TYPE_CONSTRAINT_VIOLATION,
                "u",
                True,
                "Action must be a non-empty string",
            )

    def test_call_bad_payload(self) -> None:
        """A Call payload that is not an object is a TypeConstraintViolation, answered."""
        for payload in ("[]", "null", '"x"', "1", "true"):
            self.assertFrameError(
                f'[2,"u","Heartbeat",{payload}]',
                messages.TYPE_CONSTRAINT_VIOLATION,
                "u",
                True,
                "Payload must be a JSON object",
            )

    def test_call_result_arity(self) -> None:
        """A CallResult of the wrong length is a FormationViolation and never answered."""
        self.assertFrameError("[3]", messages.FORMATION_VIOLATION, None, False)
        for frame in ('[3,"u"]', '[3,"u",{},{}]'):
            self.assertFrameError(
                frame, messages.FORMATION_VIOLATION, "u", False, "A CallResult must have 3 elements"
            )

    def test_call_result_bad_payload(self) -> None:
        """A CallResult payload that is not an object is a TypeConstraintViolation, never answered."""
        for payload in ("[]", "null", '"x"', "1"):
            self.assertFrameError(
                f'[3,"u",{payload}]',
                messages.TYPE_CONSTRAINT_VIOLATION,
                "u",
                False,
                "Payload must be a JSON object",
            )

    def test_call_error_arity(self) -> None:
        """A CallError of the wrong length is a FormationViolation and never answered."""
        self.assertFrameError("[4]", messages.FORMATION_VIOLATION, None, False)
        for frame in ('[4,"u"]', '[4,"u","GenericError","x"]', '[4,"u","GenericError","x",{},1]'):
            self.assertFrameError(
                frame, messages.FORMATION_VIOLATION, "u", False, "A CallError must have 5 elements"
            )

    def test_call_error_bad_types(self) -> None:
        """A CallError with a non-string code or description is a TypeConstraintViolation, never answered."""
        for frame in ('[4,"u",7,"x",{}]', '[4,"u","GenericError",null,{}]', '[4,"u",[],{},{}]'):
            self.assertFrameError(
                frame,
                messages.TYPE_CONSTRAINT_VIOLATION,
                "u",
                False,
                "ErrorCode and ErrorDescription must be strings",
            )

    def test_answerable_needs_unique_id(self) -> None:
        """A FrameError without a UniqueId is never answerable, whatever the caller asked."""
        self.assertFalse(FrameError(messages.PROTOCOL_ERROR, "x", None, True).answerable)
        self.assertTrue(FrameError(messages.PROTOCOL_ERROR, "x", "u", True).answerable)
        self.assertFalse(FrameError(messages.PROTOCOL_ERROR, "x", "u", False).answerable)

    def test_reply_shaped_frames_never_answerable(self) -> None:
        """No broken CallResult or CallError frame, of any shape, is answerable."""
        bodies = ["", ',"u"', ',"u",{}', ',"u",[]', ',"u",{},{}', ',"u","C","d",{}', ',"u",1,2,3', ",7,{}"]
        for type_id in ("3", "4", "3.0", "4.0", '"3"', '"4"'):
            for body in bodies:
                text = f"[{type_id}{body}]"
                try:
                    decode_frame(text)
                except FrameError as e:
                    self.assertFalse(e.answerable, f"{text} answerable")


class RecoveredUniqueIdTests(SynchronousTestCase):
    """A frame that is not JSON the codec accepts still yields the UniqueId that starts it."""

    def error(self, text: str, limit: int | None = None) -> FrameError:
        return self.assertRaises(FrameError, decode_frame, text, limit)

    def assertAnswer(self, error: FrameError, code: str, unique_id: str | None, answerable: bool) -> None:
        self.assertEqual((error.code, error.unique_id, error.answerable), (code, unique_id, answerable))

    def test_each_limit_of_the_codec(self) -> None:
        """Too deep, NaN, Infinity, a number out of range, a BOM, trailing text: answerable Calls."""
        deep = "[" * 70 + "1" + "]" * 70
        for tail in (deep, "NaN", "Infinity", "-1e400", '{"a":1}] x', '{"a":1'):
            error = self.error(f'[2,"id-1","DataTransfer",{tail}]')
            self.assertAnswer(error, "FormationViolation", "id-1", True)
        error = self.error('\ufeff[2,"id-2","Heartbeat",{}]')
        self.assertAnswer(error, "FormationViolation", "id-2", True)
        self.assertIn("BOM", error.description)

    def test_whitespace_and_escapes(self) -> None:
        """JSON whitespace around the elements and string escapes are read as JSON reads them."""
        error = self.error(' \t[ 2 ,\r\n "a\\"b\\\\c\\/\\u00e9\\n\\ud83d\\ude00" , NaN]')
        self.assertEqual(error.unique_id, 'a"b\\c/é\n😀')
        error = self.error('[2,"\\ud800",NaN]')
        self.assertEqual(error.unique_id, "\ud800")

    def test_replies_keep_their_id_unanswered(self) -> None:
        """A broken CallResult or CallError keeps its UniqueId for the log and is never answerable."""
        for text in ('[3,"r1",{"v":NaN}]', '[4,"r1","GenericError","",NaN]'):
            error = self.error(text)
            self.assertAnswer(error, "FormationViolation", "r1", False)

    def test_unknown_type(self) -> None:
        """An unknown MessageTypeId is a ProtocolError, as for a frame that parses."""
        self.assertAnswer(self.error('[7,"u7",NaN]'), "ProtocolError", "u7", True)
        self.assertAnswer(self.error('[7,"u7",{}]'), "ProtocolError", "u7", True)

    def test_unreadable_starts(self) -> None:
        """No UniqueId unless the start is [<integer>,"<valid JSON string>", exactly."""
        for text in (
            '[2,"a\x01b",NaN]',  # a raw control character
            '[2,"a\\x",NaN]',  # an invalid escape
            '[2,"ab" NaN]',  # no comma after it
            '[2,"ab',  # cut inside it
            '[2.0,"ab",NaN]',
            '["2","ab",NaN]',
            '[02,"ab",NaN]',
            '{"2":"ab",',
            'x[2,"ab",NaN]',
        ):
            error = self.error(text)
            self.assertEqual((error.unique_id, error.answerable), (None, False), text)

    def test_too_long_not_echoed(self) -> None:
        """A Call's UniqueId over the limit, readable or past the window searched, answers with "-1"."""
        for text in (
            '[2,"' + "x" * 129 + '",NaN]',
            '[2,"' + "x" * 10_000 + '",NaN]',
            '[2,"' + "\\u0078" * 129 + '",NaN]',
            json.dumps([2, "x" * 129, "Heartbeat", {}]),
            json.dumps([9, "x" * 129, "Heartbeat", {}]),
        ):
            error = self.error(text, 128)
            self.assertEqual(
                (error.code, error.unique_id, error.answerable, error.description),
                ("FormationViolation", messages.UNREADABLE_ID, True, "UniqueId longer than 128 characters"),
            )
        self.assertEqual(decode_frame(json.dumps([2, "x" * 128, "Heartbeat", {}]), 128).unique_id, "x" * 128)
        self.assertEqual(decode_frame(json.dumps([3, "x" * 129, {}]), 128).unique_id, "x" * 129)
        self.assertEqual(self.error('[3,"' + "x" * 129 + '",NaN]', 128).answerable, False)
        self.assertEqual(self.error('[2,"' + "\\u0078" * 128 + '",NaN]', 128).unique_id, "x" * 128)

    def test_window_without_limit(self) -> None:
        """Without a limit the UniqueId is looked for in the first 8 KB only."""
        self.assertEqual(self.error('[2,"' + "x" * 8000 + '",NaN]').unique_id, "x" * 8000)
        self.assertIsNone(self.error('[2,"' + "x" * 9000 + '",NaN]').unique_id)


class EncodeFrameTests(SynchronousTestCase):
    """encode_frame writes compact OCPP-J text frames."""

    def test_call(self) -> None:
        """A Call is written as [2, UniqueId, Action, Payload] without spaces."""
        self.assertEqual(
            encode_frame(Call("u1", "Reset", {"type": "Soft"})), '[2,"u1","Reset",{"type":"Soft"}]'
        )

    def test_call_result(self) -> None:
        """A CallResult is written as [3, UniqueId, Payload]; its Action is not part of the frame."""
        self.assertEqual(
            encode_frame(CallResult("u1", {"status": "Accepted"}, "Reset")), '[3,"u1",{"status":"Accepted"}]'
        )

    def test_call_error(self) -> None:
        """A CallError is written as [4, UniqueId, ErrorCode, ErrorDescription, ErrorDetails]."""
        self.assertEqual(
            encode_frame(CallError("u1", "GenericError", "boom", {}, "Reset")),
            '[4,"u1","GenericError","boom",{}]',
        )

    def test_unicode_unescaped(self) -> None:
        """Non-ASCII characters are written as themselves, not as escapes."""
        text = encode_frame(Call("u", "DataTransfer", {"data": "Ωmega 😀"}))
        self.assertEqual(text, '[2,"u","DataTransfer",{"data":"Ωmega 😀"}]')

    def test_lone_surrogate_escaped(self) -> None:
        """A lone surrogate (decoded from an escape) is written escaped, so the frame is valid UTF-8."""
        text = encode_frame(Call("u", "DataTransfer", {"data": "a\ud800b", "x": "é"}))
        self.assertEqual(text, '[2,"u","DataTransfer",{"data":"a\\ud800b","x":"\\u00e9"}]')
        text.encode("utf-8")

    def test_round_trip(self) -> None:
        """decode_frame(encode_frame(m)) gives m back, for every kind of message."""
        for message in (
            Call("1", "BootNotification", BOOT_PAYLOAD),
            Call("ü", "DataTransfer", {"data": '✓ \u2028 "quoted" \\ back', "n": [1, 2.5, None, True]}),
            CallResult("2", {}),
            CallResult("3", {"idTagInfo": {"status": "Accepted"}}),
            CallError("4", "GenericError", "", {}),
            CallError("5", "NotSupported", "Ωmega", {"a": [1, {"b": None}]}),
            Call("6", "DataTransfer", {"data": "\ud800x\udfff"}),
        ):
            self.assertEqual(decode_frame(encode_frame(message)), message)


class EncodeEnvelopeTests(SynchronousTestCase):
    """encode_envelope shapes the JSON published on MQTT as the reference gateway does."""

    def test_call(self) -> None:
        """A Call has exactly MessageTypeId, UniqueId, Action and Payload, compact UTF-8."""
        data = encode_envelope(Call("1200012677", "BootNotification", BOOT_PAYLOAD))
        self.assertIsInstance(data, bytes)
        self.assertEqual(
            data,
            b'{"MessageTypeId":2,"UniqueId":"1200012677","Action":"BootNotification",'
            b'"Payload":{"chargePointVendor":"VendorX","chargePointModel":"ModelY"}}',
        )
        self.assertEqual(list(json.loads(data)), ["MessageTypeId", "UniqueId", "Action", "Payload"])

    def test_call_result_with_action(self) -> None:
        """A CallResult answering a known downstream Call carries that Call's Action."""
        body = json.loads(encode_envelope(CallResult("u", {"status": "Accepted"}, "Reset")))
        self.assertEqual(
            body, {"MessageTypeId": 3, "UniqueId": "u", "Action": "Reset", "Payload": {"status": "Accepted"}}
        )
        self.assertEqual(list(body), ["MessageTypeId", "UniqueId", "Action", "Payload"])

    def test_call_result_without_action(self) -> None:
        """A CallResult of unknown origin has no Action key at all."""
        body = json.loads(encode_envelope(CallResult("u", {})))
        self.assertEqual(body, {"MessageTypeId": 3, "UniqueId": "u", "Payload": {}})

    def test_call_error_with_action(self) -> None:
        """A CallError carries ErrorCode, ErrorDescription and ErrorDetails, and the Action when known."""
        body = json.loads(
            encode_envelope(CallError("u", "GenericError", "timed out", {"after": 30}, "GetConfiguration"))
        )
        self.assertEqual(
            body,
            {
                "MessageTypeId": 4,
                "UniqueId": "u",
                "Action": "GetConfiguration",
                "ErrorCode": "GenericError",
                "ErrorDescription": "timed out",
                "ErrorDetails": {"after": 30},
            },
        )
        self.assertEqual(
            list(body),
            ["MessageTypeId", "UniqueId", "Action", "ErrorCode", "ErrorDescription", "ErrorDetails"],
        )

    def test_call_error_without_action(self) -> None:
        """A CallError of unknown origin has no Action key."""
        body = json.loads(encode_envelope(CallError("u", "InternalError", "x", {})))
        self.assertEqual(
            set(body), {"MessageTypeId", "UniqueId", "ErrorCode", "ErrorDescription", "ErrorDetails"}
        )
        self.assertEqual(body["ErrorDetails"], {})

    def test_unicode_is_utf8(self) -> None:
        """Non-ASCII text is published as UTF-8 bytes, not \\u escapes."""
        data = encode_envelope(Call("u", "DataTransfer", {"data": "Ωmega"}))
        self.assertIn("Ωmega".encode(), data)

    def test_lone_surrogate(self) -> None:
        """A payload holding a lone surrogate still gives valid UTF-8 JSON that decodes to the same value."""
        call = decode_frame('[2,"u","DataTransfer",{"data":"\\udc00x","y":"Ω"}]')
        data = encode_envelope(call)
        data.decode("utf-8")
        self.assertEqual(_strict_loads(data)["Payload"], {"data": "\udc00x", "y": "Ω"})
        self.assertEqual(decode_envelope(data), call)


class DecodeEnvelopeTests(SynchronousTestCase):
    """decode_envelope reads what a central system publishes, or raises EnvelopeError."""

    def assertEnvelopeError(self, body: Any, unique_id: str | None, description: str) -> EnvelopeError:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        error = self.assertRaises(EnvelopeError, decode_envelope, data)
        self.assertEqual((error.unique_id, error.description), (unique_id, description))
        return error

    def test_call(self) -> None:
        """A Call envelope becomes a Call; extra keys are ignored."""
        data = b'{"MessageTypeId":2,"UniqueId":"c1","Action":"Reset","Payload":{"type":"Hard"},"X":1}'
        self.assertEqual(decode_envelope(data), Call("c1", "Reset", {"type": "Hard"}))

    def test_call_result(self) -> None:
        """A CallResult envelope keeps its optional Action."""
        self.assertEqual(
            decode_envelope(b'{"MessageTypeId":3,"UniqueId":"r","Payload":{"a":1}}'),
            CallResult("r", {"a": 1}, None),
        )
        self.assertEqual(
            decode_envelope(b'{"MessageTypeId":3,"UniqueId":"r","Action":"Heartbeat","Payload":{}}'),
            CallResult("r", {}, "Heartbeat"),
        )

    def test_call_error(self) -> None:
        """A CallError envelope keeps code, description, details and Action."""
        data = json.dumps(
            {
                "MessageTypeId": 4,
                "UniqueId": "e",
                "Action": "Authorize",
                "ErrorCode": "SecurityError",
                "ErrorDescription": "no",
                "ErrorDetails": {"k": "v"},
            }
        ).encode()
        self.assertEqual(
            decode_envelope(data), CallError("e", "SecurityError", "no", {"k": "v"}, "Authorize")
        )

    def test_call_error_defaults(self) -> None:
        """ErrorDescription defaults to '' and ErrorDetails to {}."""
        message = decode_envelope(b'{"MessageTypeId":4,"UniqueId":"e","ErrorCode":"GenericError"}')
        self.assertEqual(message, CallError("e", "GenericError", "", {}, None))

    def test_every_error_code(self) -> None:
        """All ten OCPP 1.6 error codes, with their 1.6 spellings, are accepted."""
        self.assertEqual(
            messages.ERROR_CODES,
            {
                "NotImplemented",
                "NotSupported",
                "InternalError",
                "ProtocolError",
                "SecurityError",
                "FormationViolation",
                "PropertyConstraintViolation",
                "OccurenceConstraintViolation",
                "TypeConstraintViolation",
                "GenericError",
            },
        )
        for code in messages.ERROR_CODES:
            body = {"MessageTypeId": 4, "UniqueId": "e", "ErrorCode": code}
            self.assertEqual(decode_envelope(json.dumps(body).encode()).code, code)

    def test_unicode(self) -> None:
        """UTF-8 text in an envelope decodes."""
        data = '{"MessageTypeId":2,"UniqueId":"ü","Action":"DataTransfer","Payload":{"d":"✓"}}'.encode()
        self.assertEqual(decode_envelope(data), Call("ü", "DataTransfer", {"d": "✓"}))

    def test_invalid_json(self) -> None:
        """Bytes that are not JSON give an EnvelopeError without a UniqueId."""
        error = self.assertRaises(EnvelopeError, decode_envelope, b'{"MessageTypeId":2')
        self.assertIsNone(error.unique_id)
        self.assertTrue(error.description.startswith("invalid JSON: "), error.description)
        self.assertEqual(str(error), error.description)

    def test_invalid_utf8(self) -> None:
        """Bytes that are not UTF-8 give an EnvelopeError."""
        error = self.assertRaises(EnvelopeError, decode_envelope, b'{"UniqueId":"\xff\xfe"}')
        self.assertIsNone(error.unique_id)

    def test_nan_infinity(self) -> None:
        """NaN, Infinity and overflowing numbers are refused."""
        for value in ("NaN", "Infinity", "-Infinity", "1e999"):
            data = f'{{"MessageTypeId":2,"UniqueId":"u","Action":"A","Payload":{{"v":{value}}}}}'.encode()
            error = self.assertRaises(EnvelopeError, decode_envelope, data)
            self.assertIsNone(error.unique_id)

    def test_deep_nesting(self) -> None:
        """Deep nesting, beyond the limit or the parser's recursion, gives an EnvelopeError."""
        for depth in (messages.MAX_DEPTH + 1, 100_000):
            data = (
                b'{"MessageTypeId":2,"UniqueId":"u","Action":"A","Payload":{"p":'
                + b"[" * depth
                + b"]" * depth
            )
            data += b"}}"
            self.assertRaises(EnvelopeError, decode_envelope, data)

    def test_not_an_object(self) -> None:
        """A JSON array, string or number is not an envelope."""
        for body in ([2, "u", "A", {}], "x", 2, None):
            self.assertEnvelopeError(body, None, "an envelope must be a JSON object")

    def test_bad_unique_id(self) -> None:
        """A missing, empty or non-string UniqueId is refused without a UniqueId."""
        for unique_id in (None, "", 7, ["u"]):
            body: dict[str, Any] = {"MessageTypeId": 2, "Action": "A", "Payload": {}}
            if unique_id is not None:
                body["UniqueId"] = unique_id
            self.assertEnvelopeError(body, None, "UniqueId must be a non-empty string")

    def test_bad_type_id(self) -> None:
        """A missing, string, float, boolean or unknown MessageTypeId is refused with the UniqueId."""
        for type_id in (None, "2", 2.0, True, 1, 5):
            body: dict[str, Any] = {"UniqueId": "u", "Action": "A", "Payload": {}}
            if type_id is not None:
                body["MessageTypeId"] = type_id
            self.assertEnvelopeError(body, "u", "MessageTypeId must be 2, 3 or 4")

    def test_bad_action(self) -> None:
        """An empty or non-string Action is refused, whatever the type."""
        for type_id in (2, 3, 4):
            for action in ("", 7, ["A"]):
                body = {
                    "MessageTypeId": type_id,
                    "UniqueId": "u",
                    "Action": action,
                    "Payload": {},
                    "ErrorCode": "GenericError",
                }
                self.assertEnvelopeError(body, "u", "Action must be a non-empty string")

    def test_call_without_action(self) -> None:
        """A Call needs an Action."""
        self.assertEnvelopeError(
            {"MessageTypeId": 2, "UniqueId": "u", "Payload": {}}, "u", "a Call needs an Action"
        )

    def test_bad_payload(self) -> None:
        """A Call or CallResult needs an object Payload."""
        for type_id in (2, 3):
            for payload in (None, [], "x", 1):
                body: dict[str, Any] = {"MessageTypeId": type_id, "UniqueId": "u", "Action": "A"}
                if payload is not None:
                    body["Payload"] = payload
                self.assertEnvelopeError(body, "u", "Payload must be a JSON object")

    def test_bad_error_code(self) -> None:
        """A missing, unknown or 2.0-spelled ErrorCode is refused."""
        for code in (
            None,
            "Bogus",
            "OccurrenceConstraintViolation",
            "RpcFrameworkError",
            1,
            ["GenericError"],
            {},
        ):
            body: dict[str, Any] = {"MessageTypeId": 4, "UniqueId": "u"}
            if code is not None:
                body["ErrorCode"] = code
            self.assertEnvelopeError(body, "u", "ErrorCode must be an OCPP 1.6 error code")

    def test_bad_error_description(self) -> None:
        """A non-string ErrorDescription is refused."""
        for description in (None, 1, {}):
            body = {
                "MessageTypeId": 4,
                "UniqueId": "u",
                "ErrorCode": "GenericError",
                "ErrorDescription": description,
            }
            self.assertEnvelopeError(body, "u", "ErrorDescription must be a string")

    def test_bad_error_details(self) -> None:
        """Non-object ErrorDetails are refused."""
        for details in (None, [], "x"):
            body = {"MessageTypeId": 4, "UniqueId": "u", "ErrorCode": "GenericError", "ErrorDetails": details}
            self.assertEnvelopeError(body, "u", "ErrorDetails must be a JSON object")

    def test_round_trip(self) -> None:
        """decode_envelope(encode_envelope(m)) gives m back."""
        for message in (
            Call("1", "Reset", {"type": "Soft"}),
            CallResult("2", {"status": "Accepted"}, "Reset"),
            CallResult("3", {}, None),
            CallError("4", "GenericError", "timed out", {}, "GetConfiguration"),
            CallError("5", "NotSupported", "Ω", {"a": [1, None]}, None),
        ):
            self.assertEqual(decode_envelope(encode_envelope(message)), message)

    def test_frame_to_envelope_to_frame(self) -> None:
        """A frame passed through an envelope and back is the same text."""
        for text in (
            '[2,"u","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]',
            '[3,"u",{"currentTime":"2024-01-01T00:00:00Z","interval":300,"status":"Accepted"}]',
            '[4,"u","NotImplemented","Ω",{"x":[1,2]}]',
        ):
            self.assertEqual(encode_frame(decode_envelope(encode_envelope(decode_frame(text)))), text)


_TOKENS = [
    "[", "]", "{", "}", ",", ":", '"', "\\", "\\u", "\\ud800", "2", "3", "4", "0", "-", ".", "e", "E",
    "1e999", "true", "false", "null", "NaN", "Infinity", " ", "\n", "a", "ü", "😀", "\x00", '"u"',
    '"Heartbeat"', "{}", "[]", "2,", "3,", "4,",
]  # fmt: skip


def _random_json_ish(rng: random.Random) -> str:
    return "".join(rng.choice(_TOKENS) for _ in range(rng.randint(0, 40)))


def _mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        pos = rng.randint(0, len(chars))
        if op == 0:
            chars.insert(pos, rng.choice(_TOKENS))
        elif op == 1 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif op == 2 and chars:
            chars[min(pos, len(chars) - 1)] = rng.choice(_TOKENS)
        else:
            chars = chars[:pos]
    return "".join(chars)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-5, 6)
    if kind == 3:
        return rng.choice([2.0, 3.0, 4.0, 0.5, -1e300])
    if kind in (4, 5, 6):
        return rng.choice(["", "u", "2", "3", "4", "Heartbeat", "GenericError", "ü\ud800", "a" * 50])
    if kind == 7:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {
        rng.choice(["a", "Payload", "UniqueId"]): _random_value(rng, depth + 1)
        for _ in range(rng.randint(0, 3))
    }


_VALID_FRAMES = [
    '[2,"19223201","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]',
    '[3,"19223201",{"currentTime":"2024-01-01T00:00:00Z","interval":300,"status":"Accepted"}]',
    '[4,"19223201","GenericError","x",{}]',
    '[2,"ü","DataTransfer",{"vendorId":"Ω","data":"[1,{\\"a\\":2}]"}]',
]

_VALID_ENVELOPES = [
    '{"MessageTypeId":2,"UniqueId":"c1","Action":"Reset","Payload":{"type":"Hard"}}',
    '{"MessageTypeId":3,"UniqueId":"r1","Action":"BootNotification","Payload":{"interval":300}}',
    '{"MessageTypeId":4,"UniqueId":"e1","ErrorCode":"GenericError","ErrorDescription":"x","ErrorDetails":{}}',
]


class FuzzTests(SynchronousTestCase):
    """Random and mutated input: only FrameError or EnvelopeError ever escape, and what decodes re-encodes."""

    ROUNDS = 3000

    def check_frame(self, text: str) -> None:
        try:
            message = decode_frame(text)
        except FrameError as e:
            self.assertIn(e.code, messages.ERROR_CODES)
            if e.answerable:
                self.assertIsInstance(e.unique_id, str)
            self._check_reply_not_answerable(text, e)
            return
        except Exception as e:  # pragma: no cover - the failure being tested for
            self.fail(f"decode_frame({text!r}) raised {type(e).__name__}: {e}")
        frame = encode_frame(message)
        frame.encode("utf-8")
        self.assertEqual(decode_frame(frame), message)
        body = _strict_loads(encode_envelope(message))
        self.assertEqual((body["MessageTypeId"], body["UniqueId"]), (json.loads(frame)[0], message.unique_id))

    def _check_reply_not_answerable(self, text: str, error: FrameError) -> None:
        try:
            value = _strict_loads(text)
        except (ValueError, RecursionError):
            return
        if isinstance(value, list) and value and messages._claims_reply(value[0]):
            self.assertFalse(error.answerable, text)

    def check_envelope(self, data: bytes) -> None:
        try:
            message = decode_envelope(data)
        except EnvelopeError as e:
            self.assertIsInstance(e.description, str)
            return
        except Exception as e:  # pragma: no cover - the failure being tested for
            self.fail(f"decode_envelope({data!r}) raised {type(e).__name__}: {e}")
        encode_frame(message).encode("utf-8")
        self.assertEqual(decode_envelope(encode_envelope(message)), message)

    def test_random_frames(self) -> None:
        """Random JSON-ish text given to decode_frame raises nothing but FrameError."""
        rng = random.Random(1)
        for _ in range(self.ROUNDS):
            self.check_frame(_random_json_ish(rng))

    def test_mutated_frames(self) -> None:
        """Valid frames with random edits raise nothing but FrameError."""
        rng = random.Random(2)
        for _ in range(self.ROUNDS):
            self.check_frame(_mutate(rng, rng.choice(_VALID_FRAMES)))

    def test_random_structures(self) -> None:
        """Random JSON arrays shaped like frames decode or raise FrameError, never answering a reply."""
        rng = random.Random(3)
        for _ in range(self.ROUNDS):
            value = [_random_value(rng) for _ in range(rng.randint(1, 6))]
            if rng.random() < 0.5:
                value[0] = rng.choice([2, 3, 4, "3", "4", 3.0, 4.0])
            self.check_frame(json.dumps(value))

    def test_random_envelopes(self) -> None:
        """Random, mutated and structured envelopes raise nothing but EnvelopeError."""
        rng = random.Random(4)
        for _ in range(self.ROUNDS):
            self.check_envelope(_random_json_ish(rng).encode("utf-8", "surrogatepass"))
            self.check_envelope(_mutate(rng, rng.choice(_VALID_ENVELOPES)).encode("utf-8", "surrogatepass"))
            body = {
                key: _random_value(rng)
                for key in ("MessageTypeId", "UniqueId", "Action", "Payload", "ErrorCode", "ErrorDetails")
                if rng.random() < 0.8
            }
            if rng.random() < 0.7:
                body["MessageTypeId"] = rng.choice([2, 3, 4])
                body["UniqueId"] = "u"
            self.check_envelope(json.dumps(body).encode())

    def test_random_bytes(self) -> None:
        """Arbitrary bytes, most not UTF-8, raise nothing but EnvelopeError."""
        rng = random.Random(5)
        for _ in range(self.ROUNDS):
            self.check_envelope(bytes(rng.randrange(256) for _ in range(rng.randint(0, 30))))


_TEXTS = [
    '[2,"id","Heartbeat",{}]',
    '{"MessageTypeId":3,"UniqueId":"u","Payload":{"currentTime":"2026-11-24T20:00:00.000Z","interval":300}}',
    '[3,"u",{"a":[1,2.5,-0.0,1e5,1E+5,true,false,null],"é":"\\u00e9\\ud83d\\ude00\\/\\n"}]',
    '{"a":1,"a":2}',
    " [\r\n\t1] ",
    '"\x7f\u2028"',
    "123456789012345678901234567890",
    "-9223372036854775809",
    "18446744073709551615",
    "[0.12345678901234567890123]",
    "1e400",
    "-1e400",
    '"\\ud800"',
    '["\\udc00x"]',
    "[" * 64 + "]" * 64,
    "[" * 65 + "]" * 65,
    "[" * 2000 + "]" * 2000,
    '"a\nb"',
    '"\x00"',
    "01",
    "1.",
    ".5",
    "+1",
    "[1,]",
    '{"a":1,}',
    "'a'",
    '"\\x41"',
    "[1]\x0b",
    "\x0c[1]",
    "[1]\u00a0",
    "True",
    "NaN",
    "[Infinity]",
    "1 2",
    "\ufeff[1]",
    "",
    "-",
    '{"a"}',
]


class FastJsonTests(SynchronousTestCase):
    """orjson reads and writes where it agrees with the standard library; the standard library does
    the rest, so both give the same values and the same errors."""

    def outcome(self, read: Any, text: str | bytes) -> tuple[str, Any]:
        try:
            return ("value", read(text))
        except (ValueError, RecursionError) as e:
            return ("error", type(e).__name__, str(e))

    def test_reads_like_the_standard_library(self) -> None:
        inputs: list[str | bytes] = list(_TEXTS)
        inputs += [t.encode("utf-8", "surrogatepass") for t in _TEXTS]
        inputs += [b"\xef\xbb\xbf[1]", '{"a":1}'.encode("utf-16-le"), b'"\xed\xa0\x80"', b'"\xff"']
        for text in inputs:
            with self.subTest(text=text[:40]):
                fast, slow = self.outcome(messages._loads, text), self.outcome(messages._std_loads, text)
                self.assertEqual(fast, slow)
                if fast[0] == "value":
                    self.assertEqual(repr(fast[1]), repr(slow[1]))  # 1 and 1.0, -0.0 and 0.0 apart

    def test_big_integers_stay_exact(self) -> None:
        self.assertEqual(
            messages._loads("[123456789012345678901234567890]"), [123456789012345678901234567890]
        )
        self.assertEqual(messages._loads(b"-9223372036854775809"), -9223372036854775809)

    def test_orjson_reads_the_usual_frame(self) -> None:
        calls: list[Any] = []
        real = messages.orjson.loads
        self.patch(messages.orjson, "loads", lambda text: calls.append(text) or real(text))
        messages.decode_frame('[2,"id","Heartbeat",{}]')
        self.assertEqual(len(calls), 1)

    def test_writes_like_the_standard_library(self) -> None:
        values: list[Any] = [
            [2, "id", "Heartbeat", {}],
            {"MessageTypeId": 3, "UniqueId": "u", "Payload": {"currentTime": "2026-11-24T20:00:00Z"}},
            {"é": '\u00e9\U0001f600\x00\x1f\x7f\u2028/"\\', "n": [1, -0.0, 0.1, 1.5e300, True, None]},
            [2**63, -(2**63)],
        ]
        for value in values:
            with self.subTest(value=value):
                self.assertEqual(messages._dumps(value), messages._std_dumps(value))

    def test_standard_library_writes_what_orjson_refuses(self) -> None:
        for value in ([2**64], {"a": "\ud800"}, [-(2**63) - 1]):
            with self.subTest(value=value):
                self.assertEqual(messages._dumps(value), messages._std_dumps(value))

    def test_what_orjson_refuses_is_json_dumps_text(self) -> None:
        """The fallback writes json.dumps's compact text (non-ASCII as is; a lone surrogate escaped)."""
        compact = {"separators": (",", ":")}
        cases: list[tuple[Any, str]] = [
            ([2**64, "é"], json.dumps([2**64, "é"], ensure_ascii=False, **compact)),
            ({"big": -(2**63) - 1, "n": [1.5, None]}, '{"big":-9223372036854775809,"n":[1.5,null]}'),
            ({"a": "\ud800é"}, json.dumps({"a": "\ud800é"}, **compact)),
        ]
        for value, text in cases:
            with self.subTest(value=value):
                self.assertRaises(TypeError, messages.orjson.dumps, value)
                self.assertEqual(messages._dumps(value), text)

    def test_numbers_round_trip(self) -> None:
        """orjson may spell an exponent differently (1e-7, not 1e-07): the value is the same."""
        value = [1e-7, 1e16, 123.456e-300, 5e-324, 1.7976931348623157e308]
        self.assertEqual(json.loads(messages._dumps(value)), value)

"""The gateway's one module that reaches into paho's private members, and why.

paho has no public way to do two things the gateway needs:

- to know whether it still has to re-send, after a reconnect, the QoS>0 messages
  it kept (it calls ``on_connect`` before it re-sends them, and a message handed
  to it before that would overtake them): ``resending`` reads ``_out_messages``
  under ``_out_message_mutex``, for the link's ordered replay;
- to read and write the packets every charge point call brings without paho's
  per-packet overhead, which dominates the gateway's cost per call: the client
  below, which the reactor link drives.

The client: buffered socket I/O and a short path for the hot packets.

paho reads a packet with several ``recv`` calls (one byte of type, the length
byte by byte, then the body) and writes each packet with its own ``send``.
``BufferingClient`` hands paho a ``BufferedSocket`` instead: one large ``recv``
serves many packets from memory, and everything paho writes in one step leaves
in one ``send`` when the step is over.

Per charge point call the gateway sends a QoS 1 PUBLISH and reads its PUBACK,
then reads the central system's reply (a QoS 1 PUBLISH) and sends its PUBACK;
paho spends most of its time per call on these four: byte-wise reads, packet
decoding through format strings, a ``Properties`` and a ``ReasonCode`` for every
MQTT 3.1.1 PUBACK, a send queue entry per packet.  Under MQTT 3.1.1 this client
handles them itself (the short path):

- a PUBACK or QoS 0/1 PUBLISH lying whole in the buffer is decoded here; the
  outcome goes to paho's own handling (``_do_on_publish``,
  ``_handle_on_message``) or, when the owner set them, to ``on_raw_ack`` (by
  message id) and ``on_raw_message`` (topic and payload as bytes);
- a QoS 1 ``publish`` of bytes and the PUBACK for a received message are packed
  here and put in the buffered socket, when paho's send queue is empty (else
  they queue behind it in paho); ``on_raw_write`` then tells the owner to flush.

paho keeps its state: message ids, ``_out_messages`` (so the re-send after a
reconnect is paho's), the in-flight count, its locks.  Every other packet, a
packet that has only partly arrived, and everything under MQTT 5 take paho's
own path unchanged.

This overrides paho's ``publish`` and its private ``_create_socket`` and
``_packet_read``, and relies on the private members named in ``PRIVATE_MEMBERS``;
``short_path_supported`` checks them once per client, and without them the
client is plain paho (slower, still correct).  ``tests`` check the installed
paho has them (``resending``'s two among them), and that both paths answer
every packet alike.
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Callable
from typing import Any

from paho.mqtt import client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

_PUBACK = 0x40
_PUBACK_HEAD = b"\x40\x02"
_QOS_MASK = 0x06
# First bytes the short path reads: PUBACK (no flags, as 3.1.1 requires) and PUBLISH at QoS 0 or 1
# (with or without DUP and RETAIN). QoS 2 and every other packet go through paho.
_SHORT_PATH_FIRST_BYTES = frozenset(
    {_PUBACK} | {0x30 | qos | dup | retain for qos in (0, 2) for dup in (0, 8) for retain in (0, 1)}
)
_u16 = struct.Struct("!H").unpack_from
_u16_pack = struct.Struct("!H").pack
_MAX_PAYLOAD = 268435455


def remaining_length(size: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    if size < 128:
        return bytes((size,))
    out = bytearray()
    while True:
        size, byte = divmod(size, 128)
        out.append(byte | 0x80 if size else byte)
        if not size:
            return bytes(out)


# What paho passes on_publish for a 3.1.1 PUBACK, which carries neither: built once, not per PUBACK.
_PUBACK_REASON = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)

# paho's private methods this client overrides: were one renamed, ours would never be called.
OVERRIDDEN = ("_create_socket", "_packet_read")

PRIVATE_MEMBERS = (
    "_sock",
    "_out_packet",
    "_max_inflight_messages",
    "_max_queued_messages",
    "_inflight_messages",
    "_mid_generate",
    "_raise_for_invalid_topic",
    "_last_msg_out",
    "_protocol",
    "_in_packet",
    "_out_messages",
    "_out_message_mutex",
    "_do_on_publish",
    "_handle_on_message",
    "_send_puback",
    "_manual_ack",
    "_msgtime_mutex",
    "_last_bytes_received",
    "_easy_log",
    "_call_socket_register_write",
)


def resending(client: Any) -> bool:
    """Whether paho still has to re-send QoS>0 messages it kept from an earlier connection.

    A client without paho's ``_out_messages`` (a test's fake) has nothing to re-send."""
    messages = getattr(client, "_out_messages", None)
    mutex = getattr(client, "_out_message_mutex", None)
    if messages is None or mutex is None:
        return False
    with mutex:
        return any(m.qos > 0 and m.state == mqtt.mqtt_ms_publish for m in messages.values())


class BufferedSocket:
    """paho's socket, read in large chunks and written once per paho step (``flush``)."""

    read_size = 65536

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._in = b""
        self._in_pos = 0
        self._out: list[bytes] = []
        self._retry = False  # _out[0] must be offered again as it is (TLS asks for that)
        self.error: OSError | None = None  # a write failed: the next read that reaches the socket says so
        self.would_block = False  # the last read from the socket found nothing more to read

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)  # fileno, setblocking, setsockopt, getpeercert...

    def _fill(self) -> bytes:
        """Read the next chunk from the socket; raises as the socket does, ``b""`` at end of stream."""
        if self.error is not None:
            raise self.error
        try:
            data = self.sock.recv(self.read_size)
        except _WOULD_BLOCK:
            self.would_block = True
            raise
        self.would_block = False
        if data:
            self._in = data
            self._in_pos = 0
        return data

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes; raises as the socket does when there are none (paho expects that)."""
        if self._in_pos >= len(self._in) and not self._fill():
            return b""
        start = self._in_pos
        self._in_pos = start + size
        return self._in[start : self._in_pos]

    def take_packet(self, first_bytes: frozenset[int]) -> tuple[int, bytes] | None:
        """The next packet as (first byte, body) when its first byte is one of ``first_bytes`` and it
        lies whole in the buffer, which then moves past it; else None and nothing moves.

        A malformed length is left to paho too, which reads it byte by byte and says so."""
        data = self._in
        pos = self._in_pos
        end = len(data)
        if pos >= end or data[pos] not in first_bytes:
            return None
        length = 0
        shift = 0
        index = pos + 1
        while index < end and shift < 28:
            byte = data[index]
            index += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                stop = index + length
                if stop > end:
                    return None
                self._in_pos = stop
                return data[pos], data[index:stop]
            shift += 7
        return None

    def pending(self) -> int:
        """Bytes read but not yet consumed, here and in a TLS layer: epoll does not see them."""
        inner = getattr(self.sock, "pending", None)
        return max(0, len(self._in) - self._in_pos) + (inner() if inner is not None else 0)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        self._out.append(bytes(data))
        return len(data)

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def flush(self) -> bool:
        """Write what paho gave; True when nothing is left (or the connection is gone: see ``error``)."""
        while self._out:
            if self._retry or len(self._out) == 1:
                chunk = self._out[0]
            else:
                chunk = b"".join(self._out)
                self._out = [chunk]
            try:
                sent = self.sock.send(chunk)
            except _WOULD_BLOCK:
                self._retry = True
                return False
            except OSError as e:
                self.error = e
                self._out.clear()
                return True
            self._retry = False
            if sent < len(chunk):
                self._out[0] = chunk[sent:]
                return False
            del self._out[0]
        return True

    def close(self) -> None:
        self.flush()  # DISCONNECT, written just before paho closes
        self.sock.close()


def short_path_supported(client: Any) -> bool:
    """Whether ``client`` (a paho client) and paho's module have every private member the short
    path relies on."""
    return (
        all(hasattr(client, name) for name in PRIVATE_MEMBERS)
        and all(name in vars(mqtt.Client) for name in OVERRIDDEN)
        and all(hasattr(mqtt, name) for name in ("time_func", "mqtt_ms_wait_for_puback"))
        and hasattr(mqtt.MQTTMessageInfo, "_set_as_published")
    )


class BufferingClient(mqtt.Client):
    """paho's client, given a ``BufferedSocket`` once it has connected (and done TLS), reading
    PUBACK and QoS 0/1 PUBLISH packets through the short path under MQTT 3.1.1."""

    on_raw_ack: Callable[[int], None] | None = None
    """When set, the short path reports each acknowledged QoS 1 message here, by message id, instead of
    through ``on_publish`` (which builds nothing for it, but takes two locks and a reason code)."""

    on_raw_write: Callable[[], None] | None = None
    """When set, called instead of paho's ``on_socket_register_write`` each time the short path has put a
    packet in the buffered socket: its owner then flushes the socket (paho's own send queue is empty)."""

    on_raw_message: Callable[[bytes, bytes], None] | None = None
    """When set, the short path hands each PUBLISH it reads here, as (topic, payload), and builds no
    ``MQTTMessage`` for ``on_message`` (nor consults ``message_callback_add`` filters)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.short_path = short_path_supported(self)

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket())

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        sock = self._sock
        if (
            not self.short_path
            or type(sock) is not BufferedSocket
            or self._in_packet["command"] != 0  # paho is in the middle of a packet
            or self._protocol != mqtt.MQTTv311
        ):
            return super()._packet_read()
        if sock._in_pos >= len(sock._in):
            rc = self._fill(sock)
            if rc is not None:
                return rc
        packet = sock.take_packet(_SHORT_PATH_FIRST_BYTES)
        if packet is None:
            return super()._packet_read()
        command, body = packet
        if command == _PUBACK:
            return self._read_puback(body)
        return self._read_publish(command, body)

    def _fill(self, sock: BufferedSocket) -> mqtt.MQTTErrorCode | None:
        """Refill the buffer; None when there are bytes, else what paho's own read would return.

        Bytes arriving are what paho's keepalive check counts as a sign of life (paho notes it per
        packet; the packets of one chunk arrived together)."""
        try:
            data = sock._fill()
        except (BlockingIOError, ssl.SSLWantReadError):
            return mqtt.MQTTErrorCode.MQTT_ERR_AGAIN
        except ssl.SSLWantWriteError:
            self._call_socket_register_write()
            return mqtt.MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:
            return mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        return None

    def _read_puback(self, body: bytes) -> mqtt.MQTTErrorCode:
        if len(body) != 2:
            return self._malformed("wrong size of packet")
        (mid,) = _u16(body)
        sink = self.on_raw_ack
        with self._out_message_mutex:
            if mid not in self._out_messages:
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            if sink is None or self._max_inflight_messages > 0:
                return self._do_on_publish(mid, _PUBACK_REASON, _NO_PROPERTIES)
            message = self._out_messages.pop(mid)
            if message.qos > 0:
                self._inflight_messages -= 1
        message.info._set_as_published()
        sink(mid)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish(
        self,
        topic: str,
        payload: mqtt.PayloadType = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        """paho's ``publish``; a QoS 1 message of bytes, when paho has nothing queued to write before it,
        is packed here and handed to the buffered socket directly (paho's send queue stays empty).

        paho keeps the message in ``_out_messages`` as its own ``publish`` does, so the PUBACK, a
        reconnect's re-send and the in-flight count work unchanged."""
        sock = self._sock
        if (
            qos != 1
            or type(sock) is not BufferedSocket
            or type(payload) is not bytes
            or properties is not None
            or not self.short_path
            or self._out_packet
            or self._max_inflight_messages > 0
            or self._max_queued_messages > 0
            or self._protocol != mqtt.MQTTv311
            or not self.is_connected()
            or not topic
        ):
            return super().publish(topic, payload, qos, retain, properties)
        topic_bytes = topic.encode("utf-8")
        self._raise_for_invalid_topic(topic_bytes)
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError("Payload too large.")
        mid = self._mid_generate()
        message = mqtt.MQTTMessage(mid, topic_bytes)
        message.timestamp = mqtt.time_func()
        message.payload = payload
        message.qos = 1
        message.retain = retain
        info = message.info
        with self._out_message_mutex:
            if mid in self._out_messages:
                info.rc = mqtt.MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
                return info
            self._out_messages[mid] = message
            self._inflight_messages += 1
            message.state = mqtt.mqtt_ms_wait_for_puback
            size = 4 + len(topic_bytes) + len(payload)
            self._write_now(
                bytes((0x33 if retain else 0x32,))
                + remaining_length(size)
                + _u16_pack(len(topic_bytes))
                + topic_bytes
                + _u16_pack(mid)
                + payload
            )
        info.rc = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        return info

    def _read_publish(self, command: int, body: bytes) -> mqtt.MQTTErrorCode:
        qos = (command & _QOS_MASK) >> 1
        size = len(body)
        if size < 2:
            return self._malformed("PUBLISH too short for its topic length")
        (topic_size,) = _u16(body)
        start = 2 + topic_size
        if topic_size == 0:
            return self._malformed("topic can't be empty in MQTTv3")
        mid = 0
        if qos:
            if start + 2 > size:
                return self._malformed("PUBLISH too short for its topic and message id")
            (mid,) = _u16(body, start)
            payload_start = start + 2
        else:
            if start > size:
                return self._malformed("PUBLISH too short for its topic")
            payload_start = start
        topic = body[2:start]
        payload = body[payload_start:]
        sink = self.on_raw_message
        if sink is not None:
            sink(topic, payload)
        else:
            message = mqtt.MQTTMessage(mid, topic)
            message.dup = bool(command & 0x08)
            message.qos = qos
            message.retain = bool(command & 0x01)
            message.payload = payload
            message.timestamp = mqtt.time_func()
            self._handle_on_message(message)
        if qos and not self._manual_ack:
            if self._out_packet:  # behind what paho has queued
                return self._send_puback(mid)
            self._write_now(_PUBACK_HEAD + _u16_pack(mid))
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _write_now(self, packet: bytes) -> None:
        """Hand a packet to the buffered socket, as paho's ``_packet_write`` would once its queue is empty."""
        self._sock.send(packet)
        with self._msgtime_mutex:
            self._last_msg_out = mqtt.time_func()
        hook = self.on_raw_write
        if hook is None:
            self._call_socket_register_write()
        else:
            hook()

    def _malformed(self, reason: str) -> mqtt.MQTTErrorCode:
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", reason)
        return mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL


def buffering_client(**kwargs: Any) -> Any:
    return BufferingClient(**kwargs)

"""A real gateway on loopback, a broker (a private Mosquitto unless told otherwise, see
``tests.integration.brokers``), and real OCPP clients for integration tests.

The `ocpp` package is asyncio code; it runs on its own event loop in a thread,
and its results come back to the reactor as Deferreds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call_result
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from ocppgw.config import load_config
from ocppgw.core.schemas import SchemaRegistry, shipped_schema_dir
from ocppgw.service import GatewayService
from tests.devpki import make_dev_certs
from tests.integration.brokers import MOSQUITTO, make_broker
from tests.support import MqttRecorder, poll_until


class AsyncioThread:
    """An asyncio event loop in a daemon thread; ``run`` turns a coroutine into a Deferred."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="asyncio-clients")
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)

        def done(f: Any) -> None:
            error = f.exception()
            if error is None:
                reactor.callFromThread(d.callback, f.result())
            else:
                reactor.callFromThread(d.errback, error)

        future.add_done_callback(done)
        return d

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class ChargePoint(OcppChargePoint):
    """The `ocpp` package's charge point, answering the commands the tests send."""

    remote_start_reply = "Accepted"
    answer_commands = True

    @on("RemoteStartTransaction")
    async def on_remote_start(self, id_tag: str, **kwargs: Any) -> Any:
        if not self.answer_commands:
            await asyncio.sleep(3600)
        return call_result.RemoteStartTransaction(status=self.remote_start_reply)

    @on("ClearCache")
    async def on_clear_cache(self, **kwargs: Any) -> Any:
        if not self.answer_commands:
            await asyncio.sleep(3600)
        return call_result.ClearCache(status="Accepted")


class Client:
    """One charge point connection run on the asyncio thread."""

    def __init__(self, loop: AsyncioThread, websocket: Any, charge_point: ChargePoint | None) -> None:
        self.loop = loop
        self.websocket = websocket
        self.charge_point = charge_point
        self._task: Any = None
        if charge_point is not None:
            self._task = asyncio.run_coroutine_threadsafe(charge_point.start(), loop.loop)

    def call(self, payload: Any, **kwargs: Any) -> Deferred[Any]:
        assert self.charge_point is not None
        return self.loop.run(self.charge_point.call(payload, **kwargs))

    def send(self, text: str) -> Deferred[Any]:
        return self.loop.run(self.websocket.send(text))

    def recv(self, timeout: float = 10) -> Deferred[Any]:
        return self.loop.run(asyncio.wait_for(self.websocket.recv(), timeout))

    def close(self) -> Deferred[Any]:
        return self.loop.run(self.websocket.close())

    def wait_closed(self, timeout: float = 10) -> Deferred[Any]:
        async def closed() -> Any:
            await asyncio.wait_for(self.websocket.wait_closed(), timeout)
            return self.websocket.close_code, self.websocket.close_reason

        return self.loop.run(closed())


class GatewayHarness:
    """A broker, a gateway listening on a free loopback port, an MQTT recorder and clients.

    ``broker`` names the kind (``tests.integration.brokers``). On a shared broker every topic the
    tests name (``ocpp/cp/CP1``) lies under the broker's ``namespace``: ``topic()`` adds it, the
    gateway's mountpoint holds it, and ``messages()`` and ``publish()`` take topics without it.
    ``mqtt_port``: use the NATS node there (one node of a cluster the test runs) instead;
    ``node_name`` names the gateway node.
    """

    def __init__(
        self,
        testcase: Any,
        extra_config: str = "",
        checking: str = "disable",
        authenticator: Any = None,
        broker_settings: tuple[str, ...] = (),
        broker: str = MOSQUITTO,
        mqtt_port: int | None = None,
        node_name: str = "testnode",
    ) -> None:
        self.testcase = testcase
        self.authenticator = authenticator
        self.extra_config = extra_config
        self.checking = checking
        self.node_name = node_name
        self.broker: Any = (
            make_broker(broker, settings=broker_settings) if mqtt_port is None else _OutsideNats(mqtt_port)
        )
        self.loop = AsyncioThread()
        self.clients: list[Client] = []
        self.service: GatewayService | None = None
        self.recorder: MqttRecorder | None = None
        self.config_text = ""

    @inlineCallbacks
    def start(self) -> Any:
        yield self.broker.start()
        broker = self.broker
        mqtt_options = "".join(f"{key} = {value}\n" for key, value in broker.mqtt_options.items())
        text = (
            f"[gateway]\nmessage_format_checking = {self.checking}\nnode_name = {self.node_name}\n"
            f"mountpoint = {broker.namespace}ocpp/\n"
            f"[mqtt]\nhost = 127.0.0.1\nport = {broker.port}\n{mqtt_options}"
            "reconnect_delay_min = 50ms\nreconnect_delay_max = 500ms\n"
            "[listeners.ws.default]\nbind = 127.0.0.1:0\n"
            "[api]\nenable = false\n"  # tests of the API turn it on, on a free port
        )
        self.config_text = _merge(text, self.extra_config)
        # a real file, as twistd reads it (the management API layers its changes over it), in the
        # working directory: relative paths in the tests' configs are taken from there
        handle, name = tempfile.mkstemp(prefix="gw-", suffix=".ini", dir=".")
        os.close(handle)
        self.config_path = Path(name).absolute()
        self.config_path.write_text(self.config_text, encoding="utf-8")
        config = load_config(self.config_path)
        schemas = None
        if self.checking != "disable":
            schemas = SchemaRegistry.load(shipped_schema_dir(), config.gateway.json_schema_id_prefix)
        # a session kept on a shared broker would outlive the test (RabbitMQ: a durable queue)
        self.recorder = self.mqtt_client(
            self.topic("#"),
            client_id=f"recorder-{self.node_name}-{broker.namespace}{broker.port}",
            clean_session=bool(broker.namespace),
        )
        yield self.recorder.start()
        self.service = GatewayService(config, reactor, schemas=schemas, authenticator=self.authenticator)
        self.service.startService()
        self.testcase.addCleanup(self.stop)
        yield poll_until(lambda: self.service.link.connected, timeout=10)

    def topic(self, topic: str) -> str:
        """``topic`` (``ocpp/cp/CP1``) as it is on the broker: under this test's namespace."""
        return self.broker.namespace + topic

    def mqtt_client(self, topic_filter: str, client_id: str, clean_session: bool = False) -> MqttRecorder:
        """A recorder of ``topic_filter`` (already under ``topic()``) logged in to the broker; not started."""
        options = self.broker.mqtt_options
        return MqttRecorder(
            self.broker.host,
            self.broker.port,
            topic_filter,
            client_id=client_id,
            clean_session=clean_session,
            username=options.get("username"),
            password=options.get("password"),
        )

    @property
    def port(self) -> int:
        assert self.service is not None
        return self.service.getServiceNamed("ws.default").port.getHost().port

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the management API (``[api] enable = true``, bind port 0)."""
        assert self.service is not None and self.service.api is not None and self.service.api.port is not None
        return f"http://127.0.0.1:{self.service.api.port.getHost().port}"

    def url(self, cid: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/{cid}"

    def connect(self, cid: str, ocpp_client: bool = True, **kwargs: Any) -> Deferred[Client]:
        """Open a WebSocket to the gateway (subprotocol ocpp1.6 unless told otherwise)."""
        subprotocols = kwargs.pop("subprotocols", ["ocpp1.6"])
        url = kwargs.pop("url", None) or self.url(cid)

        async def open_() -> Client:
            websocket = await websockets.connect(url, subprotocols=subprotocols, open_timeout=10, **kwargs)
            charge_point = ChargePoint(cid, websocket, response_timeout=10) if ocpp_client else None
            return Client(self.loop, websocket, charge_point)

        d = self.loop.run(open_())
        d.addCallback(self._track)
        d.addCallback(self._subscribed)
        return d

    def _subscribed(self, client: Client) -> Deferred[Client]:
        """Fires with ``client`` once the gateway's broker link has its SUBACKs, so that a command
        published now is routed to the new charge point (at once on Mosquitto, not on every broker)."""
        link = self.service.link if self.service is not None else None
        if link is None or not link.connected:
            return succeed(client)
        d = poll_until(lambda: not link.subscribing, timeout=10, description="the gateway's SUBACKs")
        return d.addCallback(lambda _: client)

    def refused(self, cid: str, **kwargs: Any) -> Deferred[tuple[int, dict[str, str], bytes]]:
        """Open a WebSocket that the gateway must refuse: (status, headers, body) of its answer.

        Fails with ``AssertionError`` when the gateway accepts it (that connection is closed)."""
        url = kwargs.pop("url", None) or self.url(cid)

        async def attempt() -> tuple[int, dict[str, str], bytes]:
            try:
                websocket = await websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=10, **kwargs)
            except websockets.InvalidStatus as e:
                headers = {name.lower(): value for name, value in e.response.headers.raw_items()}
                return e.response.status_code, headers, e.response.body or b""
            await websocket.close()
            raise AssertionError(f"{cid} was let in")

        return self.loop.run(attempt())

    def _track(self, client: Client) -> Client:
        self.clients.append(client)
        return client

    @inlineCallbacks
    def boot(self, client: Client, cid: str, interval: int = 300) -> Any:
        """Send BootNotification from ``client`` and answer it Accepted from MQTT, as a central system."""
        from ocpp.v16 import call

        reply = client.call(call.BootNotification(charge_point_model="model1", charge_point_vendor="vendor1"))
        (boot,) = yield self.wait_messages(f"ocpp/cp/{cid}", 1)
        self.publish(
            cid,
            {
                "MessageTypeId": 3,
                "UniqueId": boot["UniqueId"],
                "Payload": {
                    "currentTime": "2026-11-24T12:00:00Z",
                    "interval": interval,
                    "status": "Accepted",
                },
            },
        )
        result = yield reply
        return result

    def publish(self, cid: str, envelope: dict[str, Any] | bytes) -> None:
        assert self.recorder is not None
        data = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
        self.recorder.publish(self.topic(f"ocpp/cs/{cid}"), data)

    def messages(self, topic: str) -> list[dict[str, Any]]:
        assert self.recorder is not None
        return [json.loads(m[1]) for m in self.recorder.messages(self.topic(topic))]

    def wait_messages(self, topic: str, count: int, timeout: float = 10) -> Deferred[list[dict[str, Any]]]:
        d = poll_until(lambda: len(self.messages(topic)) >= count, timeout=timeout)
        d.addCallback(lambda _: self.messages(topic))
        return d

    @inlineCallbacks
    def stop(self) -> Any:
        for client in self.clients:
            try:
                yield client.close()
            except Exception:
                pass
        if self.service is not None and self.service.running:
            yield self.service.stopService()
        if self.recorder is not None:
            if self.broker.namespace:
                yield self._clear_retained(self.recorder)
            yield self.recorder.stop()
        self.loop.stop()
        yield self.broker.close()

    def _clear_retained(self, recorder: MqttRecorder) -> Deferred[Any]:
        """Clear the retained message of every topic seen on a shared broker (a wildcard subscription
        does not show RabbitMQ's retained messages, so they are not read back)."""
        from twisted.internet.defer import gatherResults

        topics = {m.topic for m in recorder.messages()}
        return gatherResults([recorder.publish(topic, b"", retain=True) for topic in sorted(topics)])


def basic_auth(username: str, password: str | bytes) -> dict[str, str]:
    """``additional_headers`` for ``connect``/``refused``: HTTP Basic credentials (security profile 1/2)."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    token = base64.b64encode(username.encode("utf-8") + b":" + secret).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def run_cli(ini_path: str, *argv: str) -> Deferred[tuple[bytes, bytes, int]]:
    """``python -m ocppgw.cli ARGV --config ini_path`` (``users`` ... as an operator types it) run as a
    real process from this checkout, without blocking the reactor: (stdout, stderr, exit status)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    command, *rest = argv
    args = ["-m", "ocppgw.cli", command, "--config", ini_path, *rest]
    return getProcessOutputAndValue(sys.executable, args, env=env, path=root)


UPGRADE = (
    "GET /ocpp/{cid} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
)
"""A WebSocket upgrade request for ``/ocpp/{cid}`` offering ocpp1.6, to write on a raw (TLS) stream."""

KEY_PASSWORD = "k3y pass"
"""The password of the dev PKI's ``server-encrypted.key`` in ``WssTestCase``."""


class WssTestCase(TestCase):
    """A gateway with a wss listener ``wss.tls`` on loopback, served with a fresh dev PKI.

    ``wss_options`` holds extra ``key = value`` lines for the listener (``{ca}``: the dev CA file,
    ``{pki}``: the PKI directory); ``self.pki`` has CP1 and CP2 client certificates (signed by an
    intermediate when ``intermediate``), ``self.rogue`` a CP1 certificate from another CA.
    """

    wss_options = ""
    extra_config = ""  # more gw.ini sections (e.g. [authentication]); ``{data_dir}``: a fresh directory
    authenticator: Any = None
    intermediate = False

    @inlineCallbacks
    def setUp(self) -> Any:
        self.pki = make_dev_certs(
            self.mktemp(), ["CP1", "CP2"], intermediate=self.intermediate, key_password=KEY_PASSWORD
        )
        self.rogue = make_dev_certs(self.mktemp(), ["CP1"], ca_name="rogue CA")
        options = {"bind": "127.0.0.1:0", "certfile": self.pki.server_cert, "keyfile": self.pki.server_key}
        for line in self.wss_options.format(ca=self.pki.ca_cert, pki=self.pki.directory).splitlines():
            key, _, value = line.partition(" = ")
            options[key] = value
        extra = "[listeners.wss.tls]\n" + "".join(f"{key} = {value}\n" for key, value in options.items())
        extra += self.extra_config.replace("{data_dir}", os.path.abspath(self.mktemp()))
        self.gw = GatewayHarness(self, extra, authenticator=self.authenticator)
        yield self.gw.start()

    @property
    def port(self) -> int:
        assert self.gw.service is not None
        return self.gw.service.getServiceNamed("wss.tls").port.getHost().port

    def url(self, cid: str) -> str:
        return f"wss://localhost:{self.port}/ocpp/{cid}"

    def gone(self, cid: str) -> Deferred[Any]:
        """Fires once ``cid``'s disconnected Presence is published (so no close timer is left)."""
        return poll_until(
            lambda: [m for m in self.gw.messages(f"ocpp/cp/{cid}/Presence") if m["status"] == "disconnected"]
        )


def _merge(base: str, extra: str) -> str:
    """Later sections override earlier keys: configparser would refuse duplicate sections, so merge them."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(base)
    extra_parser = configparser.ConfigParser(interpolation=None)
    extra_parser.optionxform = str  # type: ignore[assignment,method-assign]
    extra_parser.read_string(extra)
    for section in extra_parser.sections():
        if not parser.has_section(section):
            parser.add_section(section)
        for key, value in extra_parser.items(section):
            parser.set(section, key, value)
    return "\n".join(
        f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in parser.items(section))
        for section in parser.sections()
    )


class _OutsideNats:
    """A NATS node of a cluster the test started elsewhere (``tests.integration.nats``): the harness
    neither starts nor stops it."""

    host = "127.0.0.1"
    namespace = ""
    mqtt_options = {"broker": "nats"}

    def __init__(self, port: int) -> None:
        self.port = port

    def start(self) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)

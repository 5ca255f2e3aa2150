"""Certificate reload end to end: new connections get the new certificate, live ones go on.

In process, ``GatewayService.reload_certificates`` (what the SIGHUP handler schedules) is called
directly; one test runs ``twistd`` and sends it a real SIGHUP.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
from pathlib import Path
from typing import Any

import websockets
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.devpki import client_context, make_dev_certs
from tests.integration.harness import AsyncioThread, GatewayHarness
from tests.integration.twistd_process import spawn_twistd, until_listening, write_ini
from tests.support import MosquittoBroker, MqttRecorder, free_port, poll_until


def server_der(port: int, context: ssl.SSLContext) -> bytes:
    """The DER certificate the server on ``port`` presents (blocking: run in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def file_der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


def handshake_refused(port: int, context: ssl.SSLContext) -> bool:
    try:
        server_der(port, context)
    except (ssl.SSLError, OSError):
        return True
    return False


def heartbeat(unique_id: str) -> str:
    return json.dumps([2, unique_id, "Heartbeat", {}])


class ReloadTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        self.a = make_dev_certs(self.mktemp(), [], ca_name="reload CA A")
        self.b = make_dev_certs(self.mktemp(), [], ca_name="reload CA B")
        live = Path(self.mktemp()).absolute()
        live.mkdir()
        self.cert, self.key = live / "server.pem", live / "server.key"
        shutil.copy(self.a.server_cert, self.cert)
        shutil.copy(self.a.server_key, self.key)
        extra = f"[listeners.wss.tls]\nbind = 127.0.0.1:0\ncertfile = {self.cert}\nkeyfile = {self.key}\n"
        self.gw = GatewayHarness(self, extra)
        yield self.gw.start()
        self.port = self.gw.service.getServiceNamed("wss.tls").port.getHost().port

    @inlineCallbacks
    def connect_a(self) -> Any:
        url = f"wss://localhost:{self.port}/ocpp/CP1"
        client = yield self.gw.connect("CP1", ocpp_client=False, url=url, ssl=client_context(self.a.ca_cert))
        der = client.websocket.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        self.assertEqual(der, file_der(self.a.server_cert))
        return client

    @inlineCallbacks
    def test_reload_new_connections_get_new_certificate(self) -> Any:
        """After a reload a new connection sees certificate B; the one opened before still works."""
        client = yield self.connect_a()
        shutil.copy(self.b.server_cert, self.cert)
        shutil.copy(self.b.server_key, self.key)
        self.assertEqual(self.gw.service.reload_certificates(), [])

        der = yield deferToThread(server_der, self.port, client_context(self.b.ca_cert))
        self.assertEqual(der, file_der(self.b.server_cert))
        refused = yield deferToThread(handshake_refused, self.port, client_context(self.a.ca_cert))
        self.assertTrue(refused)

        yield client.send(heartbeat("after-reload"))
        (frame,) = yield self.gw.wait_messages("ocpp/cp/CP1", 1)
        self.assertEqual(frame["UniqueId"], "after-reload")

    @inlineCallbacks
    def test_failed_reload_keeps_old(self) -> Any:
        """A key that does not match the new certificate: one line, and certificate A is still served."""
        client = yield self.connect_a()
        shutil.copy(self.b.server_cert, self.cert)  # the key stays A's
        (line,) = self.gw.service.reload_certificates()
        self.assertIn(f"the key in {self.key} does not match", line)

        der = yield deferToThread(server_der, self.port, client_context(self.a.ca_cert))
        self.assertEqual(der, file_der(self.a.server_cert))
        yield client.send(heartbeat("after-failed-reload"))
        (frame,) = yield self.gw.wait_messages("ocpp/cp/CP1", 1)
        self.assertEqual(frame["UniqueId"], "after-failed-reload")


class TwistdSighupTests(TestCase):
    """``twistd -n ocppgw`` reloads its certificates on a real SIGHUP."""

    timeout = 120

    @inlineCallbacks
    def test_sighup(self) -> Any:
        broker = MosquittoBroker(self)
        yield broker.start()
        a = make_dev_certs(self.mktemp(), [], ca_name="sighup CA A")
        b = make_dev_certs(self.mktemp(), [], ca_name="sighup CA B")
        wss_port = free_port()
        prefix = f"reload-{os.getpid()}-{wss_port}/"
        config = write_ini(
            self,
            f"[gateway]\nmountpoint = {prefix}\nnode_name = r{wss_port}\n"
            "message_format_checking = disable\n\n"
            f"[mqtt]\nport = {broker.port}\nreconnect_delay_min = 100ms\nreconnect_delay_max = 1s\n\n"
            f"[listeners.wss.tls]\nbind = 127.0.0.1:{wss_port}\n"
            "certfile = server.pem\nkeyfile = server.key\n",
        )
        cert, key = config.parent / "server.pem", config.parent / "server.key"
        shutil.copy(a.server_cert, cert)
        shutil.copy(a.server_key, key)
        recorder = MqttRecorder("127.0.0.1", broker.port, prefix + "#")
        yield recorder.start()
        self.addCleanup(recorder.stop)

        child, transport = spawn_twistd(self, config)

        yield until_listening(child, wss_port)

        loop = AsyncioThread()
        self.addCleanup(loop.stop)

        async def connect() -> Any:
            url = f"wss://localhost:{wss_port}/ocpp/CP1"
            return await websockets.connect(
                url, subprotocols=["ocpp1.6"], open_timeout=10, ssl=client_context(a.ca_cert)
            )

        connection = yield loop.run(connect())
        self.addCleanup(lambda: loop.run(connection.close()))
        der = connection.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        self.assertEqual(der, file_der(a.server_cert))

        shutil.copy(b.server_cert, cert)
        shutil.copy(b.server_key, key)
        transport.signalProcess("HUP")

        def new_certificate() -> bool:
            if child.done:
                raise AssertionError(f"twistd exited on SIGHUP\n{child.output()}")
            try:
                return server_der(wss_port, client_context(b.ca_cert)) == file_der(b.server_cert)
            except (ssl.SSLError, OSError):
                return False

        yield poll_until(new_certificate, timeout=15, description="certificate B served")

        yield loop.run(connection.send(heartbeat("after-sighup")))
        topic = f"{prefix}cp/CP1"
        yield poll_until(lambda: recorder.messages(topic), timeout=10, description="heartbeat on MQTT")
        self.assertEqual(json.loads(recorder.messages(topic)[0].payload)["UniqueId"], "after-sighup")
        self.assertIn("certificates reloaded", child.output())
        self.assertNotIn("Traceback", child.output())

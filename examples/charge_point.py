"""A small OCPP 1.6-J charge point for trying the gateway by hand.

It connects with subprotocol ocpp1.6, sends BootNotification and waits for the
central system's answer (published on MQTT to ocpp/cs/<id>), then reports
connector 0 Available and sends Heartbeats at the interval it was given. It
answers the common commands a central system sends with plausible replies.

    .venv/bin/python examples/charge_point.py --url ws://127.0.0.1:33033/ocpp --id CP001

Over wss, trust the server's CA with ``--cafile``; present a client certificate (security
profile 3) with ``--certfile``/``--keyfile``; send Basic auth (profiles 1 and 2) with
``--password``, the username being the charge point id.

Needs the ``ocpp`` and ``websockets`` packages (``pip install -e '.[test]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import ssl
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call, call_result
from ocpp.v16.enums import (
    ChargePointErrorCode,
    ChargePointStatus,
    ClearCacheStatus,
    ConfigurationStatus,
    MessageTrigger,
    RegistrationStatus,
    RemoteStartStopStatus,
    ResetStatus,
    TriggerMessageStatus,
)

log = logging.getLogger("charge_point")

# How long a Call waits for its answer; the boot answer is typed by hand in the walk-through.
BOOT_TIMEOUT = 600.0
CALL_TIMEOUT = 30.0


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ChargePoint(OcppChargePoint):
    """One connector, no real hardware: every command gets a plausible answer."""

    def __init__(self, cid: str, connection: Any) -> None:
        # Timeouts are applied per call in send(); the library's own one is out of the way.
        super().__init__(cid, connection, response_timeout=24 * 3600)
        self.heartbeat_interval = 60
        self.heartbeat_changed = asyncio.Event()
        self.transaction_id = 0
        self.configuration: dict[str, tuple[str, bool]] = {  # key -> (value, readonly)
            "HeartbeatInterval": ("60", False),
            "ConnectionTimeOut": ("60", False),
            "MeterValueSampleInterval": ("0", False),
            "NumberOfConnectors": ("1", True),
            "SupportedFeatureProfiles": ("Core,RemoteTrigger", True),
        }

    async def send(self, payload: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """Send one Call; None when it was not answered in time or answered with a CallError."""
        action = type(payload).__name__
        log.info("-> %s %s", action, payload)
        try:
            result = await asyncio.wait_for(self.call(payload), timeout)
        except TimeoutError:
            log.warning("no answer to %s within %gs", action, timeout)
            return None
        log.info("<- %s %s", action, result)
        return result

    async def boot(self) -> None:
        """BootNotification until Accepted, then StatusNotification, then Heartbeats."""
        while True:
            result = await self.send(
                call.BootNotification(charge_point_model="Example", charge_point_vendor="ocppgw"),
                timeout=BOOT_TIMEOUT,
            )
            if result is not None and result.status == RegistrationStatus.accepted:
                break
            retry = result.interval if result is not None and result.interval > 0 else 10
            log.info("not accepted yet: sending BootNotification again in %ss", retry)
            await asyncio.sleep(retry)
        if result.interval > 0:
            self.set_heartbeat_interval(result.interval)
        await self.status_notification()
        while True:
            self.heartbeat_changed.clear()
            try:
                await asyncio.wait_for(self.heartbeat_changed.wait(), self.heartbeat_interval)
            except TimeoutError:
                await self.send(call.Heartbeat())

    async def status_notification(self) -> None:
        await self.send(
            call.StatusNotification(
                connector_id=0,
                error_code=ChargePointErrorCode.no_error,
                status=ChargePointStatus.available,
                timestamp=now(),
            )
        )

    def set_heartbeat_interval(self, interval: int) -> None:
        log.info("heartbeat interval %ss", interval)
        self.heartbeat_interval = interval
        self.configuration["HeartbeatInterval"] = (str(interval), False)
        self.heartbeat_changed.set()

    # -- commands from the central system --------------------------------

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, connector_id: int | None = None, **kwargs: Any) -> Any:
        self.transaction_id += 1
        log.info("remote start for %s on connector %s", id_tag, connector_id or 1)
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)

    @on("RemoteStopTransaction")
    def on_remote_stop(self, transaction_id: int, **kwargs: Any) -> Any:
        known = 0 < transaction_id <= self.transaction_id
        log.info("remote stop of transaction %s (%s)", transaction_id, "known" if known else "unknown")
        status = RemoteStartStopStatus.accepted if known else RemoteStartStopStatus.rejected
        return call_result.RemoteStopTransaction(status=status)

    @on("Reset")
    def on_reset(self, type: str, **kwargs: Any) -> Any:
        log.info("%s reset requested (not really resetting)", type)
        return call_result.Reset(status=ResetStatus.accepted)

    @on("ClearCache")
    def on_clear_cache(self, **kwargs: Any) -> Any:
        log.info("authorization cache cleared")
        return call_result.ClearCache(status=ClearCacheStatus.accepted)

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message: str, **kwargs: Any) -> Any:
        supported = requested_message in (
            MessageTrigger.boot_notification,
            MessageTrigger.heartbeat,
            MessageTrigger.status_notification,
        )
        log.info("trigger %s (%s)", requested_message, "will send" if supported else "not implemented")
        status = TriggerMessageStatus.accepted if supported else TriggerMessageStatus.not_implemented
        return call_result.TriggerMessage(status=status)

    @after("TriggerMessage")
    async def after_trigger_message(self, requested_message: str, **kwargs: Any) -> None:
        if requested_message == MessageTrigger.boot_notification:
            await self.send(call.BootNotification(charge_point_model="Example", charge_point_vendor="ocppgw"))
        elif requested_message == MessageTrigger.heartbeat:
            await self.send(call.Heartbeat())
        elif requested_message == MessageTrigger.status_notification:
            await self.status_notification()

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str, **kwargs: Any) -> Any:
        current = self.configuration.get(key)
        if current is None:
            status = ConfigurationStatus.not_supported
        elif current[1]:
            status = ConfigurationStatus.rejected
        elif key == "HeartbeatInterval":
            if value.isdigit() and int(value) > 0:
                self.set_heartbeat_interval(int(value))
                status = ConfigurationStatus.accepted
            else:
                status = ConfigurationStatus.rejected
        else:
            self.configuration[key] = (value, False)
            status = ConfigurationStatus.accepted
        log.info("change %s to %r: %s", key, value, status)
        return call_result.ChangeConfiguration(status=status)

    @on("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None, **kwargs: Any) -> Any:
        wanted = key if key else list(self.configuration)
        known = [
            {"key": k, "readonly": self.configuration[k][1], "value": self.configuration[k][0]}
            for k in wanted
            if k in self.configuration
        ]
        unknown = [k for k in wanted if k not in self.configuration]
        log.info("configuration asked for %s", ", ".join(wanted))
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)


async def main(url: str, cid: str, tls: ssl.SSLContext | None = None, password: str | None = None) -> None:
    address = f"{url.rstrip('/')}/{cid}"
    log.info("connecting to %s", address)
    headers = {}
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{cid}:{password}".encode()).decode()
    options: dict[str, Any] = {"additional_headers": headers}
    if tls is not None:
        options["ssl"] = tls
    async with websockets.connect(address, subprotocols=["ocpp1.6"], **options) as connection:
        log.info("connected as %s", cid)
        charge_point = ChargePoint(cid, connection)
        listener = asyncio.ensure_future(charge_point.start())
        booting = asyncio.ensure_future(charge_point.boot())
        done, _ = await asyncio.wait({listener, booting}, return_when=asyncio.FIRST_COMPLETED)
        for task in (listener, booting):
            task.cancel()
        for task in done:
            error = task.exception()
            if error is not None and not isinstance(error, websockets.ConnectionClosed):
                raise error
    log.info("connection closed: code %s %s", connection.close_code, connection.close_reason or "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A small OCPP 1.6-J charge point (the ocpp package).")
    parser.add_argument(
        "--url", default="ws://127.0.0.1:33033/ocpp", help="listener URL without the id (%(default)s)"
    )
    parser.add_argument("--id", default="CP001", help="charge point id, appended to the URL (%(default)s)")
    parser.add_argument("--cafile", help="wss: CA certificate(s) to trust instead of the system's")
    parser.add_argument("--certfile", help="wss: client certificate (chain) to present")
    parser.add_argument("--keyfile", help="wss: the client certificate's private key")
    parser.add_argument("--password", help="Basic auth password; the username is the charge point id")
    return parser.parse_args(argv)


def tls_context(arguments: argparse.Namespace) -> ssl.SSLContext | None:
    """A client TLS context for a wss URL, from --cafile, --certfile and --keyfile."""
    if not arguments.url.startswith("wss:"):
        return None
    context = ssl.create_default_context(cafile=arguments.cafile)
    if arguments.certfile:
        context.load_cert_chain(arguments.certfile, arguments.keyfile)
    return context


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(main(arguments.url, arguments.id, tls_context(arguments), arguments.password))
    except KeyboardInterrupt:
        pass

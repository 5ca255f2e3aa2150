"""A minimal central system on MQTT: answers every Call published on ``<mountpoint>cp/+``.

It publishes ``{"MessageTypeId":3,"UniqueId":...,"Payload":{...}}`` to
``<mountpoint>cs/<cid>``: ``currentTime`` for every Call, plus ``status`` and
``interval`` for a BootNotification.  Prints ``ready`` once subscribed, exits
on SIGTERM or after ``--max-seconds``, and prints a JSON summary to stderr.

    python bench/responder.py --port 1883 [--qos 1] [--mountpoint ocpp/]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime

from paho.mqtt import client as mqtt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--mountpoint", default="ocpp/")
    parser.add_argument("--boot-interval", type=int, default=3600)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()

    up_prefix = args.mountpoint + "cp/"
    down_prefix = args.mountpoint + "cs/"
    qos = args.qos
    stats = {"received": 0, "answered": 0, "ignored": 0}
    stopping = False

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe(up_prefix + "+", qos)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        print("ready", flush=True)

    def on_message(client, userdata, message):
        stats["received"] += 1
        try:
            body = json.loads(message.payload)
            if body.get("MessageTypeId") != 2:
                stats["ignored"] += 1
                return
            unique_id = body["UniqueId"]
            action = body.get("Action")
        except (ValueError, KeyError, AttributeError):
            stats["ignored"] += 1
            return
        cid = message.topic[len(up_prefix) :]
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        payload: dict[str, object] = {"currentTime": now}
        if action == "BootNotification":
            payload["interval"] = args.boot_interval
            payload["status"] = "Accepted"
        reply = {"MessageTypeId": 3, "UniqueId": unique_id, "Payload": payload}
        client.publish(down_prefix + cid, json.dumps(reply, separators=(",", ":")), qos)
        stats["answered"] += 1

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"bench-responder-{os.getpid()}",
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=60)
    deadline = time.monotonic() + args.max_seconds
    while not stopping and time.monotonic() < deadline:
        rc = client.loop(timeout=0.2)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            print(f"responder: MQTT loop error {mqtt.error_string(rc)}", file=sys.stderr, flush=True)
            time.sleep(0.2)
            try:
                client.reconnect()
            except OSError:
                pass
    client.disconnect()
    print(json.dumps(stats), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tests for ocppgw.config: gw.ini into frozen dataclasses, every problem as one line."""

from __future__ import annotations

import configparser
import dataclasses
import operator
import os
import random
import re
import socket
from pathlib import Path
from types import MappingProxyType
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.config import (
    IGNORED_LISTENER_OPTIONS,
    TLS_VERSIONS,
    ApiSection,
    AuthenticationSection,
    ConfigError,
    DnstreamSection,
    GatewayConfig,
    GatewaySection,
    ListenerSection,
    MqttSection,
    PresenceSection,
    UpstreamSection,
    config_from_string,
    load_config,
    parse_bind,
    parse_duration,
    problem_line,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "gw.ini"
LISTENER = "[listeners.ws.default]\nbind = 33033\n"
HOST = socket.gethostname()


def problems_of(testcase: SynchronousTestCase, text: str, **kwargs: object) -> list[str]:
    """The problem lines of ``text``, which must not load."""
    error = testcase.assertRaises(ConfigError, config_from_string, text, **kwargs)
    testcase.assertEqual(str(error), "\n".join(error.problems))
    return error.problems


class DefaultsTests(SynchronousTestCase):
    def test_only_a_listener(self) -> None:
        """A file with just one listener gets every default from the dataclasses."""
        config = config_from_string(LISTENER, environ={})
        self.assertEqual(config.gateway, GatewaySection(node_name=HOST, data_dir=Path.cwd() / "data"))
        self.assertEqual(config.upstream, UpstreamSection())
        self.assertEqual(config.dnstream, DnstreamSection())
        self.assertEqual(config.mqtt, MqttSection(client_id=f"ocppgw-{HOST}"))
        self.assertEqual(config.presence, PresenceSection())
        self.assertEqual(
            config.listeners, (ListenerSection(kind="ws", name="default", host="0.0.0.0", port=33033),)
        )
        self.assertEqual(config.source, "gw.ini")

    def test_node_name_never_empty(self) -> None:
        """An empty node_name means the host name, and the MQTT client id follows it."""
        config = config_from_string("[gateway]\nnode_name =\n" + LISTENER, environ={})
        self.assertEqual(config.gateway.node_name, HOST)
        self.assertEqual(config.mqtt.client_id, f"ocppgw-{HOST}")

    def test_client_id_from_node_name(self) -> None:
        """Without client_id, the MQTT client id is ocppgw-<node_name>."""
        config = config_from_string("[gateway]\nnode_name = n1\n[mqtt]\nclient_id =\n" + LISTENER)
        self.assertEqual(config.mqtt.client_id, "ocppgw-n1")

    def test_workers(self) -> None:
        """workers: 1 by default, a count, or auto for one per CPU; the member is the node name."""
        self.assertEqual(config_from_string(LISTENER).gateway.workers, 1)
        self.assertEqual(config_from_string("[gateway]\nworkers = 3\n" + LISTENER).gateway.workers, 3)
        auto = config_from_string("[gateway]\nworkers = auto\n" + LISTENER).gateway
        self.assertEqual(auto.workers, os.cpu_count() or 1)
        self.assertEqual(auto.member, auto.node_name)

    def test_bad_workers(self) -> None:
        """A bad workers value is one line naming [gateway] workers."""
        for bad in ("0", "two", "-1", "1025", "1.5"):
            self.assertEqual(
                problems_of(self, "[gateway]\nworkers = " + bad + "\n" + LISTENER),
                [f"gw.ini: [gateway] workers: expected auto or an integer from 1 to 1024, got '{bad}'"],
            )

    def test_source(self) -> None:
        """The source string given is kept on the config."""
        self.assertEqual(config_from_string(LISTENER, source="/etc/gw.ini").source, "/etc/gw.ini")

    def test_empty_sections(self) -> None:
        """A section with no keys is fine and keeps its defaults."""
        config = config_from_string("[gateway]\n[upstream]\n[dnstream]\n[mqtt]\n[presence]\n" + LISTENER)
        self.assertEqual(config.upstream, UpstreamSection())

    def test_frozen(self) -> None:
        """The sections cannot be changed after loading."""
        config = config_from_string(LISTENER)
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, config.mqtt, "port", 1)


FULL = """\
[gateway]
mountpoint = site/${cid}/     ; a comment after whitespace
default_heartbeat_interval = 2m
heartbeat_checking_times_backoff = 3
message_format_checking = upstream_only
json_schema_dir = schemas
json_schema_id_prefix = urn:test:
idle_timeout = 500ms
max_frame_size = 64KB
ping_interval = 0
ping_timeout = 2.5
node_name = gw-1
shutdown_timeout = 1h

[upstream]
topic = up/${cid}    # a comment with a hash
reply_topic = up/${clientid}/reply
error_topic = up/${cid}/error
qos = 2

[upstream.topic_override_mapping]
BootNotification = up/${cid}/boot
meterValues = up/${cid}/meter

[dnstream]
topic = +/dn/${cid}/#
max_mqueue_len = 0
reply_timeout = 45s
qos = 0

[mqtt]
host = broker.example
port = 8883
username = gateway
password = ${MQTT_PASSWORD}
client_id = gw-one
keepalive = 120
reconnect_delay_min = 2s
reconnect_delay_max = 2s
max_buffered_messages = 5
network_loop = Thread
quickack = off

[presence]
enable = off
topic = presence/${cid}
node_topic = nodes/${node}
qos = 0

[listeners.ws.public]
bind = 127.0.0.1:9000
path = /
mountpoint =

[listeners.ws.v6]
bind = [::1]:9001
path = /ocpp/v16
mountpoint = v6/${cid}/
"""


class AllKeysTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp())
        (self.base / "schemas").mkdir(parents=True)
        self.config = config_from_string(
            FULL, source="full.ini", base_dir=self.base, environ={"MQTT_PASSWORD": "s3cret!"}
        )

    def test_gateway(self) -> None:
        """Every [gateway] key is read and converted."""
        self.assertEqual(
            self.config.gateway,
            GatewaySection(
                mountpoint="site/${cid}/",
                default_heartbeat_interval=120.0,
                heartbeat_checking_times_backoff=3,
                message_format_checking="upstream_only",
                json_schema_dir=self.base / "schemas",
                json_schema_id_prefix="urn:test:",
                idle_timeout=0.5,
                max_frame_size=65536,
                ping_interval=0.0,
                ping_timeout=2.5,
                node_name="gw-1",
                shutdown_timeout=3600.0,
                data_dir=self.base / "data",
            ),
        )

    def test_upstream(self) -> None:
        """Every [upstream] key and the override mapping are read."""
        self.assertEqual(
            self.config.upstream,
            UpstreamSection(
                topic="up/${cid}",
                reply_topic="up/${clientid}/reply",
                error_topic="up/${cid}/error",
                qos=2,
                topic_override_mapping=MappingProxyType(
                    {"BootNotification": "up/${cid}/boot", "meterValues": "up/${cid}/meter"}
                ),
            ),
        )

    def test_dnstream(self) -> None:
        """Every [dnstream] key is read; the topic may be a filter with + and #."""
        self.assertEqual(
            self.config.dnstream,
            DnstreamSection(topic="+/dn/${cid}/#", max_mqueue_len=0, reply_timeout=45.0, qos=0),
        )

    def test_mqtt(self) -> None:
        """Every [mqtt] key is read, the password from the environment."""
        self.assertEqual(
            self.config.mqtt,
            MqttSection(
                host="broker.example",
                port=8883,
                username="gateway",
                password="s3cret!",
                client_id="gw-one",
                keepalive=120,
                reconnect_delay_min=2.0,
                reconnect_delay_max=2.0,
                max_buffered_messages=5,
                network_loop="thread",
                quickack=False,
            ),
        )

    def test_presence(self) -> None:
        """Every [presence] key is read."""
        self.assertEqual(
            self.config.presence,
            PresenceSection(enable=False, topic="presence/${cid}", node_topic="nodes/${node}", qos=0),
        )

    def test_listeners(self) -> None:
        """Listeners keep file order; an empty mountpoint overrides the gateway's with ''."""
        self.assertEqual(
            self.config.listeners,
            (
                ListenerSection(
                    kind="ws", name="public", host="127.0.0.1", port=9000, path="/", mountpoint=""
                ),
                ListenerSection(
                    kind="ws", name="v6", host="::1", port=9001, path="/ocpp/v16", mountpoint="v6/${cid}/"
                ),
            ),
        )

    def test_source(self) -> None:
        """The source is kept."""
        self.assertEqual(self.config.source, "full.ini")


def with_listener(text: str) -> str:
    return text + "\n" + LISTENER


# (INI text, the exact problem line expected among the problems)
BAD_VALUES = [
    ("[mqtt]\nhots = x\n", "gw.ini: [mqtt] hots: unknown option"),
    ("[mqtt]\nHost = x\n", "gw.ini: [mqtt] Host: unknown option"),
    ("[mqtt]\nport = abc\n", "gw.ini: [mqtt] port: expected an integer, got 'abc'"),
    ("[mqtt]\nport = 0\n", "gw.ini: [mqtt] port: expected an integer from 1 to 65535, got '0'"),
    ("[mqtt]\nport = 65536\n", "gw.ini: [mqtt] port: expected an integer from 1 to 65535, got '65536'"),
    ("[mqtt]\nport = 1_000\n", "gw.ini: [mqtt] port: expected an integer, got '1_000'"),
    ("[mqtt]\nhost =\n", "gw.ini: [mqtt] host: must not be empty"),
    ("[mqtt]\nhost = a b\n", "gw.ini: [mqtt] host: expected a host name or address, got 'a b'"),
    ("[mqtt]\nkeepalive = 0\n", "gw.ini: [mqtt] keepalive: expected an integer from 1 to 65535, got '0'"),
    (
        "[mqtt]\nmax_buffered_messages = 0\n",
        "gw.ini: [mqtt] max_buffered_messages: expected an integer >= 1, got '0'",
    ),
    (
        "[mqtt]\nquickack = sometimes\n",
        "gw.ini: [mqtt] quickack: expected true or false, got 'sometimes'",
    ),
    (
        "[mqtt]\nnetwork_loop = asyncio\n",
        "gw.ini: [mqtt] network_loop: expected one of reactor, thread, got 'asyncio'",
    ),
    (
        "[mqtt]\nreconnect_delay_min = 0s\n",
        "gw.ini: [mqtt] reconnect_delay_min: must be greater than 0, got '0s'",
    ),
    (
        "[mqtt]\nreconnect_delay_min = 1m\nreconnect_delay_max = 10s\n",
        "gw.ini: [mqtt] reconnect_delay_max: must not be less than reconnect_delay_min (60s), got '10s'",
    ),
    (
        "[mqtt]\nreconnect_delay_min = 1m\n",
        "gw.ini: [mqtt] reconnect_delay_max: must not be less than reconnect_delay_min (60s), "
        "got the default 30s",
    ),
    (
        "[gateway]\nidle_timeout = soon\n",
        "gw.ini: [gateway] idle_timeout: expected a duration such as 500ms, 30s, 5m or 1h, got 'soon'",
    ),
    (
        "[gateway]\nping_interval = -1s\n",
        "gw.ini: [gateway] ping_interval: expected a duration such as 500ms, 30s, 5m or 1h, got '-1s'",
    ),
    ("[gateway]\nping_timeout = 0\n", "gw.ini: [gateway] ping_timeout: must be greater than 0, got '0'"),
    (
        "[gateway]\nshutdown_timeout = 0ms\n",
        "gw.ini: [gateway] shutdown_timeout: must be greater than 0, got '0ms'",
    ),
    (
        "[gateway]\nheartbeat_checking_times_backoff = 0\n",
        "gw.ini: [gateway] heartbeat_checking_times_backoff: expected an integer >= 1, got '0'",
    ),
    (
        "[gateway]\nmessage_format_checking = x\n",
        "gw.ini: [gateway] message_format_checking: "
        "expected one of all, upstream_only, dnstream_only, disable, got 'x'",
    ),
    (
        "[gateway]\nmax_frame_size = 1GB\n",
        "gw.ini: [gateway] max_frame_size: expected a size in bytes such as 65536, 64KB or 1MB, got '1GB'",
    ),
    (
        "[gateway]\nmax_frame_size = 0KB\n",
        "gw.ini: [gateway] max_frame_size: must be greater than 0, got '0KB'",
    ),
    (
        "[gateway]\nmountpoint = a/+/\n",
        "gw.ini: [gateway] mountpoint: must not contain the MQTT wildcards + or #, got 'a/+/'",
    ),
    (
        "[gateway]\nmountpoint = a/#\n",
        "gw.ini: [gateway] mountpoint: must not contain the MQTT wildcards + or #, got 'a/#'",
    ),
    (
        "[gateway]\nnode_name = a/b\n",
        "gw.ini: [gateway] node_name: must not contain /, +, # or whitespace, got 'a/b'",
    ),
    ("[presence]\nenable = maybe\n", "gw.ini: [presence] enable: expected true or false, got 'maybe'"),
    ("[presence]\nqos = 3\n", "gw.ini: [presence] qos: expected 0, 1 or 2, got '3'"),
    (
        "[presence]\ntopic = p/+\n",
        "gw.ini: [presence] topic: must not contain the MQTT wildcards + or #, got 'p/+'",
    ),
    ("[presence]\ntopic =\n", "gw.ini: [presence] topic: must not be empty"),
    (
        "[presence]\nnode_topic = n/${cid}\n",
        "gw.ini: [presence] node_topic: ${cid} is not allowed here, use ${node}",
    ),
    (
        "[presence]\nnode_topic = n/${clientid}\n",
        "gw.ini: [presence] node_topic: ${clientid} is not allowed here, use ${node}",
    ),
    (
        "[upstream]\ntopic = cp/${node}\n",
        "gw.ini: [upstream] topic: ${node} is only allowed in [presence] node_topic",
    ),
    ("[upstream]\ntopic = cp/all\n", "gw.ini: [upstream] topic: must contain ${cid}, got 'cp/all'"),
    ("[upstream]\nreply_topic = r\n", "gw.ini: [upstream] reply_topic: must contain ${cid}, got 'r'"),
    ("[upstream]\nerror_topic = e\n", "gw.ini: [upstream] error_topic: must contain ${cid}, got 'e'"),
    (
        "[upstream]\ntopic = cp/#/${cid}\n",
        "gw.ini: [upstream] topic: must not contain the MQTT wildcards + or #, got 'cp/#/${cid}'",
    ),
    ("[upstream]\ntopic =\n", "gw.ini: [upstream] topic: must not be empty"),
    ("[upstream]\nqos = one\n", "gw.ini: [upstream] qos: expected 0, 1 or 2, got 'one'"),
    ("[dnstream]\ntopic = cs/all\n", "gw.ini: [dnstream] topic: must contain ${cid}, got 'cs/all'"),
    (
        "[dnstream]\ntopic = cs/${cid}/a#\n",
        "gw.ini: [dnstream] topic: expected an MQTT topic filter where + is a whole level and # only "
        "the whole last level, got 'cs/${cid}/a#'",
    ),
    (
        "[dnstream]\ntopic = cs/#/${cid}\n",
        "gw.ini: [dnstream] topic: expected an MQTT topic filter where + is a whole level and # only "
        "the whole last level, got 'cs/#/${cid}'",
    ),
    (
        "[dnstream]\nmax_mqueue_len = -1\n",
        "gw.ini: [dnstream] max_mqueue_len: expected an integer >= 0, got '-1'",
    ),
    ("[dnstream]\nreply_timeout = 0\n", "gw.ini: [dnstream] reply_timeout: must be greater than 0, got '0'"),
    (
        "[mqtt]\nhost = ${cid}\n",
        "gw.ini: [mqtt] host: ${cid} is only allowed in topic templates and mountpoints",
    ),
    ("[mqtt]\nhost = a${B\n", "gw.ini: [mqtt] host: malformed ${...}, write ${NAME}, got 'a${B'"),
    ("[mqtt]\nhost = ${}\n", "gw.ini: [mqtt] host: malformed ${...}, write ${NAME}, got '${}'"),
    (
        "[mqtt]\nhost = a\n  port = 1\n",
        "gw.ini: [mqtt] host: expected one line; an indented line continues the value above it",
    ),
    (
        "[upstream.topic_override_mapping]\nBoot-Notification = a/${cid}\n",
        "gw.ini: [upstream.topic_override_mapping] Boot-Notification: not an action name",
    ),
    (
        "[upstream.topic_override_mapping]\n9Boot = a/${cid}\n",
        "gw.ini: [upstream.topic_override_mapping] 9Boot: not an action name",
    ),
    (
        "[upstream.topic_override_mapping]\nBootNotification = a/+/${cid}\n",
        "gw.ini: [upstream.topic_override_mapping] BootNotification: "
        "must not contain the MQTT wildcards + or #, got 'a/+/${cid}'",
    ),
    (
        "[gateway]\njson_schema_dir = /nonexistent/dir\n",
        "gw.ini: [gateway] json_schema_dir: expected an existing directory, got '/nonexistent/dir'",
    ),
    ("[nope]\n", "gw.ini: [nope]: unknown section"),
    ("[DEFAULT]\nhost = x\n", "gw.ini: [DEFAULT]: unknown section"),
    ("[Gateway]\n", "gw.ini: [Gateway]: unknown section"),
    ("[listeners.tcp.a]\nbind = 1\n", "gw.ini: [listeners.tcp.a]: unknown section"),
    ("[listeners.ws.a.b]\nbind = 1\n", "gw.ini: [listeners.ws.a.b]: unknown section"),
    ("[listeners.ws.]\nbind = 1\n", "gw.ini: [listeners.ws.]: unknown section"),
    ("[listeners.ws.x]\nbind = 1\nhots = 2\n", "gw.ini: [listeners.ws.x] hots: unknown option"),
    (
        "[listeners.ws.x]\npath = /ocpp\n",
        "gw.ini: [listeners.ws.x] bind: missing, expected PORT, HOST:PORT or [IPv6]:PORT",
    ),
    (
        "[listeners.ws.x]\nbind = 1\npath = ocpp\n",
        "gw.ini: [listeners.ws.x] path: must start with /, got 'ocpp'",
    ),
    (
        "[listeners.ws.x]\nbind = 1\npath = /ocpp/\n",
        "gw.ini: [listeners.ws.x] path: must not end with /, got '/ocpp/'",
    ),
    (
        "[listeners.ws.x]\nbind = 1\npath = /a?b\n",
        "gw.ini: [listeners.ws.x] path: must not contain whitespace, ? or #, got '/a?b'",
    ),
    (
        "[listeners.ws.x]\nbind = 1\nmountpoint = +/\n",
        "gw.ini: [listeners.ws.x] mountpoint: must not contain the MQTT wildcards + or #, got '+/'",
    ),
    (
        "[listeners.ws.x]\nbind = http\n",
        "gw.ini: [listeners.ws.x] bind: expected PORT, HOST:PORT or [IPv6]:PORT "
        "with a port from 0 to 65535, got 'http'",
    ),
    (
        "[listeners.ws.x]\nbind = 1\n[listeners.ws.y]\nbind = 0.0.0.0:1\n",
        "gw.ini: [listeners.ws.y] bind: 0.0.0.0:1 is already used by [listeners.ws.x]",
    ),
    (
        "[listeners.ws.x]\nbind = [::1]:80\n[listeners.ws.y]\nbind = [0:0::1]:80\n",
        "gw.ini: [listeners.ws.y] bind: 0:0::1:80 is already used by [listeners.ws.x]",
    ),
    ("[mqtt]\nport = 1\nport = 2\n", "gw.ini: [mqtt] port: duplicate option (line 3)"),
    ("[mqtt]\n[presence]\n[mqtt]\n", "gw.ini: [mqtt]: duplicate section (line 3)"),
    ("port = 1\n[mqtt]\n", "gw.ini: line 1: text before the first [section] header"),
    ("[mqtt]\nport\n", "gw.ini: line 2: expected 'key = value' or a [section] header"),
    ("[mqtt]\n= 5\n", "gw.ini: line 2: expected 'key = value' or a [section] header"),
]


class ProblemLineTests(SynchronousTestCase):
    def test_each_problem_line(self) -> None:
        """Each bad value, key or section gives exactly this line and nothing else goes wrong."""
        for text, line in BAD_VALUES:
            problems = problems_of(self, with_listener(text), environ={})
            self.assertIn(line, problems, f"for {text!r}")

    def test_listeners_only_in_listener_sections(self) -> None:
        """The bad listener cases above really are about their own section."""
        problems = problems_of(self, "[listeners.ws.x]\nbind = http\n")
        self.assertEqual(
            problems,
            [
                "gw.ini: [listeners.ws.x] bind: expected PORT, HOST:PORT or [IPv6]:PORT "
                "with a port from 0 to 65535, got 'http'"
            ],
        )

    def test_no_listener(self) -> None:
        """A file without any listener section says so."""
        problems = problems_of(self, "[mqtt]\nhost = broker\n")
        self.assertEqual(problems, ["gw.ini: [listeners.ws.<name>]: no listener configured"])

    def test_empty_file(self) -> None:
        """An empty file has no listener."""
        self.assertEqual(problems_of(self, ""), ["gw.ini: [listeners.ws.<name>]: no listener configured"])

    def test_source_in_every_line(self) -> None:
        """Problem lines start with the source given."""
        problems = problems_of(self, "[mqtt]\nport = x\n", source="/etc/ocppgw/gw.ini")
        self.assertIn("/etc/ocppgw/gw.ini: [mqtt] port: expected an integer, got 'x'", problems)

    def test_long_value_shortened(self) -> None:
        """A very long bad value is cut so that the problem stays readable."""
        (line,) = problems_of(self, with_listener("[mqtt]\nport = " + "9" * 5000 + "\n"))
        self.assertLess(len(line), 200)
        self.assertIn("expected an integer from 1 to 65535, got '999", line)

    def test_inline_comment_needs_whitespace(self) -> None:
        """A # right after text is part of the value, so it is checked as a wildcard."""
        problems = problems_of(self, with_listener("[upstream]\ntopic = cp/${cid}/#\n"))
        self.assertEqual(
            problems,
            ["gw.ini: [upstream] topic: must not contain the MQTT wildcards + or #, got 'cp/${cid}/#'"],
        )

    def test_case_insensitive_words(self) -> None:
        """Booleans, checking modes and size suffixes accept any case."""
        config = config_from_string(
            with_listener(
                "[presence]\nenable = Yes\n[gateway]\nmessage_format_checking = ALL\nmax_frame_size = 2mb\n"
            )
        )
        self.assertTrue(config.presence.enable)
        self.assertEqual(config.gateway.message_format_checking, "all")
        self.assertEqual(config.gateway.max_frame_size, 2 * 1024 * 1024)

    def test_booleans(self) -> None:
        """All the spellings of true and false."""
        for word, expected in [
            ("true", True), ("yes", True), ("on", True), ("1", True),
            ("false", False), ("no", False), ("off", False), ("0", False),
        ]:  # fmt: skip
            config = config_from_string(with_listener(f"[presence]\nenable = {word}\n"))
            self.assertIs(config.presence.enable, expected, word)


class CollectedProblemsTests(SynchronousTestCase):
    def test_all_problems_together(self) -> None:
        """Problems in several sections, syntax ones included, come in one ConfigError."""
        text = (
            "junk before any section\n"
            "[mqtt]\n"
            "hots = localhost\n"
            "port = abc\n"
            "port = 1883\n"
            "password = ${UNSET_PASSWORD}\n"
            "[gateway]\n"
            "idle_timeout = 0\n"
            "not an option line\n"
            "[upstream]\n"
            "topic = cp/all\n"
            "[mqtt]\n"
            "host = again\n"
            "[weird]\n"
        )
        problems = problems_of(self, text, environ={})
        self.assertEqual(
            sorted(problems),
            sorted(
                [
                    "gw.ini: line 1: text before the first [section] header",
                    "gw.ini: [mqtt] port: duplicate option (line 5)",
                    "gw.ini: [mqtt]: duplicate section (line 12)",
                    "gw.ini: line 9: expected 'key = value' or a [section] header",
                    "gw.ini: [mqtt] hots: unknown option",
                    "gw.ini: [mqtt] port: expected an integer, got 'abc'",
                    "gw.ini: [mqtt] password: environment variable UNSET_PASSWORD is not set",
                    "gw.ini: [gateway] idle_timeout: must be greater than 0, got '0'",
                    "gw.ini: [upstream] topic: must contain ${cid}, got 'cp/all'",
                    "gw.ini: [weird]: unknown section",
                    "gw.ini: [listeners.ws.<name>]: no listener configured",
                ]
            ),
        )

    def test_every_duplicate(self) -> None:
        """Each duplicate key and section is reported, not just the first."""
        text = "[mqtt]\nport = 1\nport = 2\nport = 3\nhost = a\nhost = b\n[mqtt]\n[mqtt]\n" + LISTENER
        self.assertEqual(
            problems_of(self, text),
            [
                "gw.ini: [mqtt] port: duplicate option (line 3)",
                "gw.ini: [mqtt] port: duplicate option (line 4)",
                "gw.ini: [mqtt] host: duplicate option (line 6)",
                "gw.ini: [mqtt]: duplicate section (line 7)",
                "gw.ini: [mqtt]: duplicate section (line 8)",
            ],
        )

    def test_problems_attribute(self) -> None:
        """ConfigError.problems is a list of single lines, also joined as str(error)."""
        error = self.assertRaises(ConfigError, config_from_string, "[a]\n[b]\n")
        self.assertEqual(
            error.problems,
            [
                "gw.ini: [a]: unknown section",
                "gw.ini: [b]: unknown section",
                "gw.ini: [listeners.ws.<name>]: no listener configured",
            ],
        )
        self.assertEqual(str(error), "\n".join(error.problems))


class EnvironmentTests(SynchronousTestCase):
    def test_substitution(self) -> None:
        """${NAME} in any value comes from the environment given."""
        config = config_from_string(
            "[mqtt]\nhost = ${BROKER}\nport = ${PORT}\nusername = u-${SITE}-x\n"
            "[upstream]\ntopic = ${SITE}/${cid}\n[listeners.ws.a]\nbind = ${BIND}\n",
            environ={"BROKER": "mq", "PORT": "1884", "SITE": "s1", "BIND": "127.0.0.1:0"},
        )
        self.assertEqual((config.mqtt.host, config.mqtt.port, config.mqtt.username), ("mq", 1884, "u-s1-x"))
        self.assertEqual(config.upstream.topic, "s1/${cid}")
        self.assertEqual((config.listeners[0].host, config.listeners[0].port), ("127.0.0.1", 0))

    def test_substituted_value_compared(self) -> None:
        """Cross-key checks quote the value after substitution too."""
        problems = problems_of(
            self,
            with_listener("[mqtt]\nreconnect_delay_min = 10s\nreconnect_delay_max = ${MAX}\n"),
            environ={"MAX": "5s"},
        )
        self.assertEqual(
            problems,
            ["gw.ini: [mqtt] reconnect_delay_max: must not be less than reconnect_delay_min (10s), got '5s'"],
        )

    def test_substituted_value_checked(self) -> None:
        """The value after substitution is what gets checked and quoted."""
        problems = problems_of(self, with_listener("[mqtt]\nport = ${PORT}\n"), environ={"PORT": "http"})
        self.assertEqual(problems, ["gw.ini: [mqtt] port: expected an integer, got 'http'"])

    def test_unset(self) -> None:
        """Each unset variable is one problem line."""
        problems = problems_of(
            self, with_listener("[mqtt]\nhost = ${A}-${B}\npassword = ${MQTT_PASSWORD}\n"), environ={}
        )
        self.assertEqual(
            problems,
            [
                "gw.ini: [mqtt] host: environment variable A is not set",
                "gw.ini: [mqtt] host: environment variable B is not set",
                "gw.ini: [mqtt] password: environment variable MQTT_PASSWORD is not set",
            ],
        )

    def test_default_environ(self) -> None:
        """Without an environ mapping, os.environ is used."""
        name = "OCPPGW_TEST_CONFIG_HOST"
        os.environ[name] = "from-os-environ"
        self.addCleanup(os.environ.pop, name, None)
        config = config_from_string(with_listener(f"[mqtt]\nhost = ${{{name}}}\n"))
        self.assertEqual(config.mqtt.host, "from-os-environ")

    def test_single_pass(self) -> None:
        """A value from the environment is not expanded again."""
        config = config_from_string(with_listener("[mqtt]\npassword = ${P}\n"), environ={"P": "a${B}c"})
        self.assertEqual(config.mqtt.password, "a${B}c")

    def test_dollar_alone_is_literal(self) -> None:
        """A $ not followed by { is kept as it is."""
        config = config_from_string(with_listener("[mqtt]\npassword = pa$$word$\n"))
        self.assertEqual(config.mqtt.password, "pa$$word$")

    def test_password_never_shown(self) -> None:
        """The password is in neither a problem line nor the repr of the config."""
        secret = "Sup3r-Secret-Value"
        config = config_from_string(with_listener(f"[mqtt]\npassword = {secret}\nusername = u\n"))
        self.assertEqual(config.mqtt.password, secret)
        self.assertNotIn(secret, repr(config))
        self.assertNotIn(secret, str(config))
        for text in [
            f"[mqtt]\npassword = {secret}${{UNSET}}\nport = x\n",
            f"[mqtt]\npassword = {secret}${{oops\n",
            f"[mqtt]\npassword = {secret}\n  {secret}\n",
            f"[mqtt]\npassword = {secret}\npassword = {secret}\n",
            f"[mqtt]\npassword {secret}\n",
            f"password = {secret}\n[mqtt]\n",
        ]:
            error = self.assertRaises(ConfigError, config_from_string, with_listener(text), environ={})
            self.assertNotIn(secret, str(error), text)
            self.assertNotIn(secret, repr(error.problems), text)

    def test_password_from_environment_not_shown(self) -> None:
        """A password read from the environment stays out of the repr too."""
        config = config_from_string(with_listener("[mqtt]\npassword = ${PW}\n"), environ={"PW": "xyzzy-42"})
        self.assertEqual(config.mqtt.password, "xyzzy-42")
        self.assertNotIn("xyzzy-42", repr(config))

    def test_empty_credentials_are_none(self) -> None:
        """An empty username or password means none."""
        config = config_from_string(with_listener("[mqtt]\nusername =\npassword =\n"))
        self.assertIsNone(config.mqtt.username)
        self.assertIsNone(config.mqtt.password)


class OverrideMappingTests(SynchronousTestCase):
    def test_case_kept(self) -> None:
        """Action names keep their case and the mapping is read-only."""
        config = config_from_string(
            with_listener(
                "[upstream.topic_override_mapping]\n"
                "BootNotification = b/${cid}\n"
                "bootnotification = l/${cid}\n"
            )
        )
        mapping = config.upstream.topic_override_mapping
        self.assertIsInstance(mapping, MappingProxyType)
        self.assertEqual(dict(mapping), {"BootNotification": "b/${cid}", "bootnotification": "l/${cid}"})
        self.assertRaises(TypeError, operator.setitem, mapping, "X", "y")

    def test_template_checked(self) -> None:
        """An override topic must be a valid template with ${cid}."""
        problems = problems_of(self, with_listener("[upstream.topic_override_mapping]\nHeartbeat = hb\n"))
        self.assertEqual(
            problems, ["gw.ini: [upstream.topic_override_mapping] Heartbeat: must contain ${cid}, got 'hb'"]
        )


class LoadConfigTests(SynchronousTestCase):
    def write(self, text: str, name: str = "gw.ini") -> Path:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / name
        path.write_text(text, encoding="utf-8")
        return path

    def test_relative_path_from_file_directory(self) -> None:
        """A relative json_schema_dir is taken from the INI file's directory, not the cwd."""
        path = self.write(with_listener("[gateway]\njson_schema_dir = my-schemas\n"))
        (path.parent / "my-schemas").mkdir()
        self.assertNotEqual(Path.cwd(), path.parent.absolute())
        config = load_config(path)
        self.assertEqual(config.gateway.json_schema_dir, path.parent.absolute() / "my-schemas")
        self.assertTrue(config.gateway.json_schema_dir.is_dir())

    def test_relative_path_missing(self) -> None:
        """A relative directory missing next to the file is a problem naming the resolved path."""
        path = self.write(with_listener("[gateway]\njson_schema_dir = gone\n"))
        error = self.assertRaises(ConfigError, load_config, str(path))
        self.assertEqual(
            error.problems,
            [
                f"{path}: [gateway] json_schema_dir: expected an existing directory, got 'gone' "
                f"({path.parent.absolute() / 'gone'})"
            ],
        )

    def test_absolute_path(self) -> None:
        """An absolute json_schema_dir is used as it is."""
        schemas = Path(self.mktemp()).absolute()
        schemas.mkdir()
        path = self.write(with_listener(f"[gateway]\njson_schema_dir = {schemas}\n"))
        self.assertEqual(load_config(path).gateway.json_schema_dir, schemas)

    def test_source_as_given(self) -> None:
        """The source is the path string as given, also in problem lines."""
        path = self.write("[mqtt]\nport = x\n" + LISTENER)
        relative = os.path.relpath(path)
        error = self.assertRaises(ConfigError, load_config, relative)
        self.assertEqual(error.problems, [f"{relative}: [mqtt] port: expected an integer, got 'x'"])
        path.write_text(LISTENER, encoding="utf-8")
        self.assertEqual(load_config(relative).source, relative)

    def test_missing_file(self) -> None:
        """A file that cannot be read is one problem line with the reason."""
        error = self.assertRaises(ConfigError, load_config, "no/such/gw.ini")
        self.assertEqual(error.problems, ["no/such/gw.ini: cannot read: No such file or directory"])

    def test_directory(self) -> None:
        """A directory is not a config file."""
        directory = self.mktemp()
        os.mkdir(directory)
        error = self.assertRaises(ConfigError, load_config, directory)
        self.assertEqual(error.problems, [f"{directory}: cannot read: Is a directory"])

    def test_not_utf8(self) -> None:
        """Bytes that are not UTF-8 are one problem line."""
        path = self.write("")
        path.write_bytes(b"[mqtt]\nhost = \xff\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(error.problems, [f"{path}: cannot read: not UTF-8 text (byte 0xff at offset 14)"])

    def test_bom_and_crlf(self) -> None:
        """A UTF-8 byte order mark and Windows line ends are accepted."""
        path = self.write("")
        path.write_bytes(b"\xef\xbb\xbf[mqtt]\r\nhost = h\r\n[listeners.ws.a]\r\nbind = 1\r\n")
        self.assertEqual(load_config(path).mqtt.host, "h")


class ApiConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """No [api]: enabled on 127.0.0.1:18083 over HTTP, 60m tokens, 5 failed logins a minute."""
        api = config_from_string(LISTENER).api
        self.assertEqual(api, ApiSection())
        self.assertEqual((api.enable, api.host, api.port), (True, "127.0.0.1", 18083))
        self.assertEqual((api.token_ttl, api.login_max_failures, api.certfile), (3600.0, 5, None))

    def test_every_key(self) -> None:
        """Every [api] key is read; paths are taken from the INI's directory; the password is secret."""
        text = (
            "[api]\nenable = false\nbind = 0.0.0.0:8443\ncertfile = c.pem\nkeyfile = k.pem\n"
            "password = pw\nbootstrap_file = keys.txt\ntoken_ttl = 5m\nlogin_max_failures = 3\n" + LISTENER
        )
        api = config_from_string(text, base_dir=Path("/etc/gw")).api
        self.assertEqual(
            api,
            ApiSection(
                False, "0.0.0.0", 8443, Path("/etc/gw/c.pem"), Path("/etc/gw/k.pem"), "pw",
                Path("/etc/gw/keys.txt"), 300.0, 3,
            ),
        )  # fmt: skip
        self.assertNotIn("pw", repr(api))

    def test_problems(self) -> None:
        """Bad values and a certfile without keyfile are one line each, naming [api] and the key."""
        text = "[api]\nbind = nowhere:x\ntoken_ttl = 0\nlogin_max_failures = 0\ncertfile = c.pem\nbogus = 1\n"
        with self.assertRaises(ConfigError) as caught:
            config_from_string(text + LISTENER)
        keys = [line.split(": ")[1] for line in caught.exception.problems]
        self.assertEqual(
            sorted(keys),
            sorted(
                ["[api] bind", "[api] token_ttl", "[api] login_max_failures", "[api] keyfile", "[api] bogus"]
            ),
        )


class ExampleTests(SynchronousTestCase):
    def test_deploy_guide_example_loads(self) -> None:
        """The gw.ini a node gets in deploy/README.md loads as written (keys, values, NATS rules)."""
        guide = (EXAMPLE.parent.parent / "deploy" / "README.md").read_text(encoding="utf-8")
        (text,) = re.findall(r"```ini\n(.*?)```", guide, re.S)
        config = config_from_string(text, source="deploy/README.md", base_dir=Path(self.mktemp()))
        self.assertEqual((config.mqtt.broker, config.dnstream.qos), ("nats", 0))
        self.assertEqual(config.listeners[0].port, 33033)

    def test_example_loads(self) -> None:
        """examples/gw.ini loads and gives the defaults with one listener on 33033."""
        config = load_config(EXAMPLE)
        self.assertEqual(config, config_from_string(LISTENER, source=str(EXAMPLE), base_dir=EXAMPLE.parent))
        self.assertEqual([(lis.name, lis.port) for lis in config.listeners], [("default", 33033)])

    def test_example_shows_the_defaults(self) -> None:
        """Uncommenting every ';key = value' line of the example changes nothing."""
        text = EXAMPLE.read_text(encoding="utf-8")
        uncommented = re.sub(r"(?m)^;(?=[a-z_]+ =)", "", text)
        self.assertNotEqual(text, uncommented)
        self.assertEqual(
            config_from_string(uncommented, source=str(EXAMPLE), base_dir=EXAMPLE.parent),
            load_config(EXAMPLE),
        )

    def test_example_documents_every_key(self) -> None:
        """Every field of every section appears as a key in the example, with a comment above it."""
        lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
        documented: dict[str, set[str]] = {}
        section = ""
        for number, line in enumerate(lines):
            if line.startswith("["):
                section = line.strip("[]")
            match = re.match(r"^;?([a-z_]+) =", line)
            if match and not line.startswith("; "):
                documented.setdefault(section, set()).add(match[1])
                self.assertTrue(lines[number - 1].startswith("; "), f"no comment above {line!r}")
        expected = {
            # member: set by the process that starts the gateway (node_name by default), not gw.ini
            "gateway": {f.name for f in dataclasses.fields(GatewaySection)} - {"member"},
            "upstream": {f.name for f in dataclasses.fields(UpstreamSection)} - {"topic_override_mapping"},
            "dnstream": {f.name for f in dataclasses.fields(DnstreamSection)},
            "mqtt": {f.name for f in dataclasses.fields(MqttSection)},
            "presence": {f.name for f in dataclasses.fields(PresenceSection)},
            "api": {f.name for f in dataclasses.fields(ApiSection)} - {"host", "port"} | {"bind"},
            "listeners.ws.default": {"bind", "path"},
        }
        expected["listeners.ws.default"] |= {"proxy_protocol", "proxy_protocol_timeout"}
        expected["listeners.ws.default"] |= {
            "proxy_address_header", "trusted_proxies", "supported_subprotocols", "fail_if_no_subprotocol",
            "compress",
        }  # fmt: skip
        expected["listeners.ws.default"] |= {
            "max_connections", "max_conn_rate", "nodelay", "reuseaddr", "backlog", "send_timeout",
            "send_timeout_close",
        }  # fmt: skip
        self.assertEqual(documented, expected)
        text = "\n".join(lines)
        self.assertIn("[upstream.topic_override_mapping]", text)
        self.assertIn("; mountpoint = ", text.split("[listeners.ws.default]")[1])


class DurationTests(SynchronousTestCase):
    def test_table(self) -> None:
        """Units ms, s, m, h and bare seconds, integer or decimal."""
        for text, seconds in [
            ("500ms", 0.5),
            ("1500ms", 1.5),
            ("0ms", 0.0),
            ("30s", 30.0),
            ("5m", 300.0),
            ("1h", 3600.0),
            ("0.5h", 1800.0),
            ("1.5s", 1.5),
            ("2 s", 2.0),
            ("10", 10.0),
            ("2.5", 2.5),
            (".5", 0.5),
            ("0", 0.0),
        ]:
            self.assertEqual(parse_duration(text), seconds, text)

    def test_bad(self) -> None:
        """Anything else is refused with the expected forms in the reason."""
        for text in ["", "s", "-1", "1d", "1S", "1e3", "5 min", "inf", "nan", "1.2.3", "1" * 400]:
            error = self.assertRaises(ValueError, parse_duration, text)
            self.assertTrue(
                str(error).startswith("expected a duration such as 500ms, 30s, 5m or 1h, got "), text
            )

    def test_in_config(self) -> None:
        """Durations land in the config as float seconds."""
        config = config_from_string(with_listener("[dnstream]\nreply_timeout = 250ms\n"))
        self.assertEqual(config.dnstream.reply_timeout, 0.25)
        self.assertIsInstance(config.gateway.idle_timeout, float)


class BindTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """PORT, HOST:PORT and [IPv6]:PORT; a bare port listens on every IPv4 address."""
        for text, expected in [
            ("33033", ("0.0.0.0", 33033)),
            ("0", ("0.0.0.0", 0)),
            ("65535", ("0.0.0.0", 65535)),
            ("127.0.0.1:8080", ("127.0.0.1", 8080)),
            ("localhost:9000", ("localhost", 9000)),
            ("gw-1.example.org:80", ("gw-1.example.org", 80)),
            ("[::]:33033", ("::", 33033)),
            ("[::1]:0", ("::1", 0)),
            ("[fe80::1%eth0]:1", ("fe80::1%eth0", 1)),
        ]:
            self.assertEqual(parse_bind(text), expected, text)

    def test_bad(self) -> None:
        """Malformed binds are refused with a reason quoting the value."""
        for text, reason in [
            ("", "expected PORT, HOST:PORT or [IPv6]:PORT with a port from 0 to 65535, got ''"),
            ("65536", "expected PORT, HOST:PORT or [IPv6]:PORT with a port from 0 to 65535, got '65536'"),
            ("-1", "expected PORT, HOST:PORT or [IPv6]:PORT with a port from 0 to 65535, got '-1'"),
            ("host:", "expected PORT, HOST:PORT or [IPv6]:PORT with a port from 0 to 65535, got 'host:'"),
            (":80", "expected PORT, HOST:PORT or [IPv6]:PORT, got ':80'"),
            ("a b:80", "expected PORT, HOST:PORT or [IPv6]:PORT, got 'a b:80'"),
            ("::1:80", "write an IPv6 address in brackets, such as [::1]:33033, got '::1:80'"),
            ("[::1]", "expected PORT, HOST:PORT or [IPv6]:PORT, got '[::1]'"),
            ("[::1]80", "expected PORT, HOST:PORT or [IPv6]:PORT, got '[::1]80'"),
            ("[nothost]:80", "expected an IPv6 address inside [ ], got '[nothost]:80'"),
            ("80:tcp", "expected PORT, HOST:PORT or [IPv6]:PORT with a port from 0 to 65535, got '80:tcp'"),
        ]:
            error = self.assertRaises(ValueError, parse_bind, text)
            self.assertEqual(str(error), reason, text)

    def test_port_zero_may_repeat(self) -> None:
        """Several listeners may ask for any free port on the same host."""
        config = config_from_string(
            "[listeners.ws.a]\nbind = 127.0.0.1:0\n[listeners.ws.b]\nbind = 127.0.0.1:0\n"
        )
        self.assertEqual([lis.name for lis in config.listeners], ["a", "b"])

    def test_different_hosts(self) -> None:
        """The same port on two different addresses is two listeners."""
        config = config_from_string(
            "[listeners.ws.a]\nbind = 127.0.0.1:80\n[listeners.ws.b]\nbind = [::1]:80\n"
        )
        self.assertEqual([(lis.host, lis.port) for lis in config.listeners], [("127.0.0.1", 80), ("::1", 80)])

    def test_listener_names(self) -> None:
        """Names of letters, digits, _ and - are allowed."""
        config = config_from_string("[listeners.ws.Site_A-2]\nbind = 0\n")
        self.assertEqual(config.listeners[0].name, "Site_A-2")
        self.assertEqual(config.listeners[0].kind, "ws")


FUZZ_SECTIONS = [
    "gateway", "upstream", "upstream.topic_override_mapping", "dnstream", "mqtt", "presence",
    "listeners.ws.a", "listeners.ws.b", "listeners.ws.", "DEFAULT", "", " ", "[", "]", "x", "mqtt ",
]  # fmt: skip
FUZZ_KEYS = [
    "mountpoint", "default_heartbeat_interval", "heartbeat_checking_times_backoff",
    "message_format_checking", "json_schema_dir", "json_schema_id_prefix", "idle_timeout",
    "max_frame_size", "ping_interval", "ping_timeout", "node_name", "shutdown_timeout", "topic",
    "reply_topic", "error_topic", "qos", "max_mqueue_len", "reply_timeout", "host", "port",
    "username", "password", "client_id", "keepalive", "reconnect_delay_min", "reconnect_delay_max",
    "max_buffered_messages", "network_loop", "enable", "node_topic", "bind", "path", "BootNotification", "",
    "a b", "[x", "${A}", "9", "\x00",
]  # fmt: skip
FUZZ_VALUES = [
    "", "0", "1", "-1", "65536", "30s", "500ms", "1h", "5m", "2.5", "1e9", "9" * 5000, "inf", "nan",
    "true", "off", "all", "disable", "x", "cp/${cid}", "cs/${cid}/#", "+/#", "#", "+", "${cid}",
    "${clientid}", "${node}", "${A}", "${UNSET}", "${", "}", "${}", "${${A}}", "$", "a${A", "[::1]:0",
    "[::1]", "127.0.0.1:0", "::1:0", "/", "/ocpp", "ocpp/", "64KB", "1MB", "\x00", "\ud800", "é",
    "schemas", "..", "/nonexistent", "a" * 300, "; comment", " # c", "=", ":", "[mqtt]", "\t",
]  # fmt: skip
FUZZ_ALPHABET = "[]=:;#${}\n\t \r\x00\x0b\x1cé\ud800abcAZ019_-./+%\\\"'"


class FuzzTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.outcomes = {"loaded": 0, "refused": 0}

    def check(self, text: str) -> None:
        try:
            config = config_from_string(text, base_dir=Path("/"), environ={"A": "a", "B": "${cid}"})
        except ConfigError as e:
            self.outcomes["refused"] += 1
            self.assertTrue(e.problems, repr(text))
            for line in e.problems:
                self.assertIsInstance(line, str)
                self.assertTrue(line.startswith("gw.ini: "), repr((text, line)))
                self.assertNotIn("\n", line, repr((text, line)))
        else:
            self.outcomes["loaded"] += 1
            self.assertIsInstance(config, GatewayConfig)
            self.assertTrue(config.listeners)
            self.assertTrue(config.gateway.node_name)

    def test_structured_garbage(self) -> None:
        """Random sections, keys, values and line shapes only ever raise ConfigError."""
        rng = random.Random(1604)
        for _ in range(2000):
            lines = [LISTENER.strip()] if rng.random() < 0.5 else []
            for _ in range(rng.randrange(10)):
                kind = rng.random()
                indent = rng.choice(["", "", "", "", "", " ", "\t"])
                if kind < 0.25:
                    lines.append(f"{indent}[{rng.choice(FUZZ_SECTIONS)}]")
                elif kind < 0.9:
                    delimiter = rng.choice([" = ", " = ", "=", ": ", " : ", " "])
                    lines.append(f"{indent}{rng.choice(FUZZ_KEYS)}{delimiter}{rng.choice(FUZZ_VALUES)}")
                else:
                    lines.append(indent + rng.choice(FUZZ_VALUES))
            self.check(rng.choice(["\n", "\r\n"]).join(lines) + rng.choice(["", "\n"]))
        self.assertGreater(self.outcomes["loaded"], 20)
        self.assertGreater(self.outcomes["refused"], 20)

    def test_character_soup(self) -> None:
        """Strings of INI punctuation and odd characters only ever raise ConfigError."""
        rng = random.Random(33033)
        for _ in range(1500):
            soup = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randrange(80)))
            self.check(soup)
            self.check(LISTENER + soup)

    def test_mutated_example(self) -> None:
        """The example with its defaults set and lines deleted, repeated or cut only raises ConfigError."""
        rng = random.Random(1883)
        text = re.sub(r"(?m)^;(?=[a-z_]+ =)", "", EXAMPLE.read_text(encoding="utf-8"))
        lines = text.splitlines()
        for _ in range(300):
            mutated = list(lines)
            for _ in range(rng.randrange(1, 6)):
                index = rng.randrange(len(mutated))
                action = rng.randrange(4)
                if action == 0:
                    del mutated[index]
                elif action == 1:
                    mutated.insert(index, mutated[index])
                elif action == 2:
                    mutated[index] = mutated[index][: rng.randrange(len(mutated[index]) + 1)]
                else:
                    mutated[index] = " " + mutated[index]
            self.check("\n".join(mutated))
        self.assertGreater(self.outcomes["loaded"], 20)
        self.assertGreater(self.outcomes["refused"], 20)


class IniSyntaxTests(SynchronousTestCase):
    """Duplicates and text before any header are found in one scan; configparser reads the file once."""

    def test_one_parse(self) -> None:
        """However many duplicates, configparser reads the text once and every one is reported."""
        calls: list[str] = []
        read_string = configparser.ConfigParser.read_string

        def counting(parser: configparser.ConfigParser, text: str, source: str = "<string>") -> None:
            calls.append(text)
            read_string(parser, text, source)

        self.patch(configparser.ConfigParser, "read_string", counting)
        text = "".join(f"[mqtt]\nport = {n}\nport = {n}\n" for n in range(1, 6)) + LISTENER
        problems = problems_of(self, text)
        self.assertEqual(len(calls), 1)
        self.assertEqual(len(problems), 5 + 4)
        self.assertEqual(problems[:3], [
            "gw.ini: [mqtt] port: duplicate option (line 3)",
            "gw.ini: [mqtt]: duplicate section (line 4)",
            "gw.ini: [mqtt] port: duplicate option (line 6)",
        ])  # fmt: skip

    def test_duplicate_key_in_duplicate_section(self) -> None:
        """A duplicate key inside a repeated section is named by the section as written."""
        problems = problems_of(self, "[mqtt]\n[mqtt]\nport = 1\nport = 2\n" + LISTENER)
        self.assertEqual(
            problems,
            ["gw.ini: [mqtt]: duplicate section (line 2)", "gw.ini: [mqtt] port: duplicate option (line 4)"],
        )

    def test_indented_lines_continue(self) -> None:
        """A deeper indented line continues the value above it, even when it looks like a header or key."""
        problems = problems_of(self, "[mqtt]\nhost = a\n  [mqtt]\n  host = b\nhost = c\n" + LISTENER)
        self.assertEqual(
            problems,
            [
                "gw.ini: [mqtt] host: duplicate option (line 5)",
                "gw.ini: [mqtt] host: expected one line; an indented line continues the value above it",
            ],
        )

    def test_set_aside_key_keeps_its_lines(self) -> None:
        """Lines continuing a duplicate key go with it, not with the first key, which stays one line."""
        problems = problems_of(self, "[mqtt]\nhost = a\nhost = b\n  more\nport = x\n" + LISTENER)
        self.assertEqual(
            problems,
            [
                "gw.ini: [mqtt] host: duplicate option (line 3)",
                "gw.ini: [mqtt] port: expected an integer, got 'x'",
            ],
        )

    def test_text_before_first_header(self) -> None:
        """Each line before the first header is reported; comments and blank lines are not."""
        problems = problems_of(self, "; c\nport = 1\n\n  # c\nhost\n[mqtt]\nport = 2\n" + LISTENER)
        self.assertEqual(
            problems,
            [
                "gw.ini: line 2: text before the first [section] header",
                "gw.ini: line 5: text before the first [section] header",
            ],
        )

    def test_comments_found_as_configparser_finds_them(self) -> None:
        """configparser pairs the n-th ``;`` with the n-th ``#``; the scan agrees on what a header is."""
        problems = problems_of(self, "[s]\n[s]a#b# #c];x ;e\n" + LISTENER)
        self.assertEqual(problems, ["gw.ini: [s]: unknown section", "gw.ini: [s]a#b# #c]: unknown section"])


class ListenerSectionTests(SynchronousTestCase):
    def test_label_and_section(self) -> None:
        """``label`` is ``kind.name``, ``section`` the gw.ini section it came from."""
        ws, wss = config_from_string(
            "[listeners.ws.default]\nbind = 1\n[listeners.wss.tls-1]\nbind = 2\n"
            "certfile = c.pem\nkeyfile = k.pem\n",
            environ={},
        ).listeners
        self.assertEqual((ws.label, ws.section), ("ws.default", "listeners.ws.default"))
        self.assertEqual((wss.label, wss.section), ("wss.tls-1", "listeners.wss.tls-1"))

    def test_bind_conflict_names_section(self) -> None:
        """The conflict line names the other listener by its section."""
        problems = problems_of(
            self, "[listeners.wss.a]\nbind = 1\ncertfile = c\nkeyfile = k\n[listeners.ws.b]\nbind = 1\n"
        )
        self.assertEqual(
            problems, ["gw.ini: [listeners.ws.b] bind: 0.0.0.0:1 is already used by [listeners.wss.a]"]
        )

    def test_reuseaddr_false_ignored(self) -> None:
        """``reuseaddr = false`` changes nothing in Twisted, so it is listed as ignored; true is not."""
        self.assertIn("reuseaddr", IGNORED_LISTENER_OPTIONS)
        text = "[listeners.ws.a]\nbind = 1\nreuseaddr = {}\nbuffer = 4\n"
        off = config_from_string(text.format("false"), environ={}).listeners[0]
        on = config_from_string(text.format("true"), environ={}).listeners[0]
        self.assertEqual((off.reuseaddr, off.ignored_options), (False, ("buffer", "reuseaddr")))
        self.assertEqual((on.reuseaddr, on.ignored_options), (True, ("buffer",)))

    def test_public_names(self) -> None:
        """The names other modules import stay importable from ocppgw.config."""
        self.assertEqual(TLS_VERSIONS[0], "tlsv1.3")
        self.assertEqual(problem_line("gw.ini", "mqtt", "port", "bad"), "gw.ini: [mqtt] port: bad")
        self.assertEqual(problem_line("gw.ini", "weird", None, "unknown"), "gw.ini: [weird]: unknown")


class HardeningKeysTests(SynchronousTestCase):
    """The bounds and interop keys of the public edge: defaults, values and one-line problems."""

    def test_defaults(self) -> None:
        """Without them: outgoing frames bounded as incoming ones, 128-character UniqueIds, a 16KB
        handshake, 64MB being received at once; OCPP 1.6 served to chargers that offer no subprotocol."""
        config = config_from_string("[gateway]\nmax_frame_size = 2KB\n[listeners.ws.a]\nbind = 1\n")
        gateway = config.gateway
        self.assertEqual(
            (gateway.max_outgoing_frame_size, gateway.max_unique_id_length, gateway.max_handshake_size),
            (2048, 128, 16384),
        )
        self.assertEqual(gateway.max_inflight_bytes, 64 * 1024 * 1024)
        (listener,) = config.listeners
        self.assertEqual(listener.supported_subprotocols, ("ocpp1.6",))
        self.assertFalse(listener.fail_if_no_subprotocol)
        self.assertEqual((listener.proxy_address_header, listener.trusted_proxies), ("", ()))
        self.assertFalse(listener.compress)

    def test_values(self) -> None:
        """Each key as written in gw.ini."""
        config = config_from_string(
            "[gateway]\nmax_outgoing_frame_size = 4MB\nmax_unique_id_length = 36\nmax_handshake_size = 8KB\n"
            "max_inflight_bytes = 1MB\n[listeners.wss.a]\nbind = 1\ncertfile = c\nkeyfile = k\n"
            "fail_if_no_subprotocol = true\nproxy_address_header = X-Forwarded-For\n"
            "trusted_proxies = 10.0.0.0/8, ::1\ncompress = on\n"
        )
        gateway = config.gateway
        self.assertEqual(
            (gateway.max_outgoing_frame_size, gateway.max_unique_id_length, gateway.max_handshake_size),
            (4 * 1024 * 1024, 36, 8192),
        )
        (listener,) = config.listeners
        self.assertTrue(listener.fail_if_no_subprotocol)
        self.assertEqual(listener.proxy_address_header, "x-forwarded-for")
        self.assertEqual([str(n) for n in listener.trusted_proxies], ["10.0.0.0/8", "::1/128"])
        self.assertTrue(listener.compress)

    def test_problems(self) -> None:
        """A bad value is one line naming section and key."""
        error = self.assertRaises(
            ConfigError,
            config_from_string,
            "[gateway]\nmax_unique_id_length = 0\n[listeners.ws.a]\nbind = 1\n"
            "supported_subprotocols = ocpp2.0.1\nproxy_address_header = a b\ntrusted_proxies = 10.0.0.0/33\n",
        )
        self.assertEqual(
            [line.split(":")[1].strip() for line in error.problems],
            [
                "[gateway] max_unique_id_length",
                "[listeners.ws.a] supported_subprotocols",
                "[listeners.ws.a] proxy_address_header",
                "[listeners.ws.a] trusted_proxies",
            ],
        )


AUTH = "[authentication]\nbackend = {backend}\n"


def auth_of(text: str, **kwargs: Any) -> AuthenticationSection | None:
    """The [authentication] section of ``text`` with a listener."""
    kwargs.setdefault("environ", {})
    return config_from_string(LISTENER + text, **kwargs).authentication


class AuthenticationExampleTests(SynchronousTestCase):
    """The commented [authentication] block at the end of examples/gw.ini documents every key."""

    def block(self) -> str:
        text = EXAMPLE.read_text(encoding="utf-8")
        start = text.index("; [authentication]\n")
        block = text[start : text.index("\n\n", start)]
        return re.sub(r"(?m)^; (?=\[authentication\]$|[a-z0-9_]+ =)", "", block)

    def test_documents_every_key(self) -> None:
        """Each field of AuthenticationSection is a key of the block (``from`` for jwt_from), each
        subsection is described, and a comment comes before each group of keys."""
        block = self.block()
        keys = re.findall(r"(?m)^([a-z0-9_]+) =", block)
        self.assertEqual(len(keys), len(set(keys)))
        subsections = {"headers", "body", "verify_claims", "filter"}
        expected = {f.name for f in dataclasses.fields(AuthenticationSection)} - subsections - {"jwt_from"}
        self.assertEqual(set(keys), expected | {"from"})
        for name in subsections:
            self.assertIn(f"[authentication.{name}]", block)
        lines = block.splitlines()
        for number, line in enumerate(lines):
            if re.match(r"[a-z0-9_]+ =", line):
                self.assertRegex(lines[number - 1], r"^(; |[a-z0-9_]+ =)", line)

    def test_block_loads_with_its_values(self) -> None:
        """Uncommented, the block loads: the built-in database with every default, and the examples
        of url, server, query and cmd kept as written."""
        section = auth_of(self.block())
        self.assertEqual(
            section,
            AuthenticationSection(
                backend="built_in_database",
                url="http://127.0.0.1:8080/auth",
                query="SELECT password_hash, salt, is_superuser FROM mqtt_user "
                "WHERE username = ${username} LIMIT 1",
                cmd="HMGET mqtt_user:${username} password_hash salt is_superuser",
            ),
        )

    def test_example_has_no_authentication(self) -> None:
        """The example itself allows everyone: the block is commented out."""
        self.assertIsNone(load_config(EXAMPLE).authentication)


# (the [authentication] text, the exact problem line expected among the problems)
AUTH_BAD = [
    ("[authentication]\nuser_id_type = username\n",
     "gw.ini: [authentication] backend: missing, expected one of built_in_database, http, jwt, postgresql, "
     "mysql, redis, mongodb"),
    (AUTH.format(backend="ldap"),
     "gw.ini: [authentication] backend: expected one of built_in_database, http, jwt, postgresql, mysql, "
     "redis, mongodb, got 'ldap'"),
    (AUTH.format(backend="jwt") + "mechanism = password_based\nsecret = s\n",
     "gw.ini: [authentication] mechanism: password_based does not go with backend = jwt"),
    (AUTH.format(backend="mysql") + "mechanism = jwt\n",
     "gw.ini: [authentication] mechanism: jwt does not go with backend = mysql"),
    (AUTH.format(backend="built_in_database") + "password_hash_algorithm = pbkdf2\n",
     "gw.ini: [authentication] iterations: missing, pbkdf2 needs an iteration count"),
    (AUTH.format(backend="built_in_database") + "password_hash_algorithm = argon2\n",
     "gw.ini: [authentication] password_hash_algorithm: expected one of plain, md5, sha, sha256, sha512, "
     "bcrypt, pbkdf2, got 'argon2'"),
    (AUTH.format(backend="built_in_database") + "mac_fun = md4\n",
     "gw.ini: [authentication] mac_fun: md4 cannot be used with pbkdf2; expected one of sha, sha224, sha256, "
     "sha384, sha512"),
    (AUTH.format(backend="built_in_database") + "mac_fun = ripemd160\n",
     "gw.ini: [authentication] mac_fun: ripemd160 cannot be used with pbkdf2; expected one of sha, sha224, "
     "sha256, sha384, sha512"),
    (AUTH.format(backend="built_in_database") + "salt_rounds = 4\n",
     "gw.ini: [authentication] salt_rounds: expected an integer from 5 to 31, got '4'"),
    (AUTH.format(backend="built_in_database") + "salt_rounds = 32\n",
     "gw.ini: [authentication] salt_rounds: expected an integer from 5 to 31, got '32'"),
    (AUTH.format(backend="built_in_database") + "iterations = 0\n",
     "gw.ini: [authentication] iterations: expected an integer >= 1, got '0'"),
    (AUTH.format(backend="built_in_database") + "dk_length = 4294967296\n",
     "gw.ini: [authentication] dk_length: expected an integer from 1 to 4294967295, got '4294967296'"),
    (AUTH.format(backend="built_in_database") + "salt_position = middle\n",
     "gw.ini: [authentication] salt_position: expected one of prefix, suffix, disable, got 'middle'"),
    (AUTH.format(backend="built_in_database") + "user_id_type = peerhost\n",
     "gw.ini: [authentication] user_id_type: expected one of username, clientid, got 'peerhost'"),
    (AUTH.format(backend="built_in_database") + "request_timeout = 0\n",
     "gw.ini: [authentication] request_timeout: must be greater than 0, got '0'"),
    (AUTH.format(backend="built_in_database") + "nosuch = 1\n",
     "gw.ini: [authentication] nosuch: unknown option"),
    (AUTH.format(backend="built_in_database") + "url = ${nosuch}\n",
     "gw.ini: [authentication] url: environment variable nosuch is not set"),
    (AUTH.format(backend="http") + "[authentication.body]\nuser = ${nosuch}\n",
     "gw.ini: [authentication.body] user: environment variable nosuch is not set"),
    (AUTH.format(backend="http"),
     "gw.ini: [authentication] url: missing, expected the authentication server's http:// or https:// URL"),
    (AUTH.format(backend="http") + "url = ftp://h/auth\n",
     "gw.ini: [authentication] url: expected an http:// or https:// URL, got 'ftp://h/auth'"),
    (AUTH.format(backend="http") + "url = http://u:p@h/auth\n",
     "gw.ini: [authentication] url: must not hold user info (user:password@); use [authentication.headers]"),
    (AUTH.format(backend="http") + "url = http://h/auth#x\n",
     "gw.ini: [authentication] url: must not have a #fragment, got 'http://h/auth#x'"),
    (AUTH.format(backend="http") + "url = http://${clientid}/auth\n",
     "gw.ini: [authentication] url: placeholders may fill the path and query only, got 'http://${clientid}/auth'"),
    (AUTH.format(backend="http")
     + "url = http://h/a\nmethod = get\n[authentication.headers]\nContent-Type = a/b\n",
     "gw.ini: [authentication.headers] content-type: a get request has no body; remove content-type"),
    (AUTH.format(backend="http") + "url = http://h/a\n[authentication.headers]\ncontent-type = text/plain\n",
     "gw.ini: [authentication.headers] content-type: expected one of application/json, "
     "application/x-www-form-urlencoded, got 'text/plain'"),
    (AUTH.format(backend="http") + "url = http://h/a\n[authentication.headers]\nx y = 1\n",
     "gw.ini: [authentication.headers] x y: expected an HTTP header name"),
    (AUTH.format(backend="http") + "url = http://h/a\n[authentication.headers]\nX-A = 1\nx-a = 2\n",
     "gw.ini: [authentication.headers] x-a: given twice (names are compared in lower case)"),
    (AUTH.format(backend="http") + "url = https://h/a\nssl_certfile = /nonexistent/c.pem\n",
     "gw.ini: [authentication] ssl_keyfile: missing, expected the path of a PEM file "
     "(set with ssl_certfile)"),
    (AUTH.format(backend="http") + "url = https://h/a\nssl_cacertfile = /nonexistent/ca.pem\n",
     "gw.ini: [authentication] ssl_cacertfile: cannot read the PEM file /nonexistent/ca.pem: "
     "No such file or directory"),
    (AUTH.format(backend="jwt"),
     "gw.ini: [authentication] secret: missing, hmac-based needs the shared secret"),
    (AUTH.format(backend="jwt") + "algorithm = public-key\n",
     "gw.ini: [authentication] public_key: missing, public-key needs the path of the PEM file "
     "of the public key"),
    (AUTH.format(backend="jwt") + "algorithm = public-key\npublic_key = /nonexistent/k.pem\n",
     "gw.ini: [authentication] public_key: cannot read the public key /nonexistent/k.pem: "
     "No such file or directory"),
    (AUTH.format(backend="jwt") + "use_jwks = true\n",
     "gw.ini: [authentication] endpoint: missing, use_jwks needs the JWKS URL"),
    (AUTH.format(backend="jwt") + "from = header\nsecret = s\n",
     "gw.ini: [authentication] from: expected one of password, username, got 'header'"),
    (AUTH.format(backend="jwt") + "secret = s\n[authentication.verify_claims]\nsub = ${password}\n",
     "gw.ini: [authentication.verify_claims] sub: only ${clientid} and ${username} are filled in here, "
     "got ${password}"),
    (AUTH.format(backend="postgresql"),
     "gw.ini: [authentication] server: missing, expected HOST:PORT of the postgresql server"),
    (AUTH.format(backend="postgresql"),
     "gw.ini: [authentication] database: missing, expected the database name"),
    (AUTH.format(backend="mysql"),
     "gw.ini: [authentication] query: missing, expected the SELECT that finds the user "
     "(password_hash, salt, is_superuser)"),
    (AUTH.format(backend="mysql") + "server = db:x\n",
     "gw.ini: [authentication] server: expected an integer, got 'x'"),
    (AUTH.format(backend="mysql") + "server = ::1\n",
     "gw.ini: [authentication] server: write an IPv6 address in brackets, such as [::1]:5432, got '::1'"),
    (AUTH.format(backend="mysql") + "pool_size = 0\n",
     "gw.ini: [authentication] pool_size: expected an integer from 1 to 1024, got '0'"),
    (AUTH.format(backend="redis") + "server = r\n",
     "gw.ini: [authentication] cmd: missing, expected HGET or HMGET, a key and fields, such as "
     "HMGET mqtt_user:${username} password_hash salt is_superuser"),
    (AUTH.format(backend="redis") + "server = r\ncmd = GET k\n",
     "gw.ini: [authentication] cmd: expected HGET or HMGET, got 'GET'"),
    (AUTH.format(backend="redis") + "server = r\ncmd = HGET k password_hash salt\n",
     "gw.ini: [authentication] cmd: HGET takes one field; use HMGET for several"),
    (AUTH.format(backend="redis") + "server = r\ncmd = HMGET k password_hash nick\n",
     "gw.ini: [authentication] cmd: unknown fields nick; expected among password_hash, password, salt, "
     "is_superuser, clientid_override"),
    (AUTH.format(backend="redis") + "server = r\ncmd = HMGET k salt is_superuser\n",
     "gw.ini: [authentication] cmd: needs the field password_hash or password"),
    (AUTH.format(backend="redis") + "server = r\ncmd = HMGET k\n",
     "gw.ini: [authentication] cmd: expected HMGET KEY FIELD..., got 'HMGET k'"),
    (AUTH.format(backend="redis") + "redis_type = cluster\n",
     "gw.ini: [authentication] redis_type: expected one of single, got 'cluster'"),
    (AUTH.format(backend="redis") + "server = r\ncmd = HGET k password\ndatabase = one\n",
     "gw.ini: [authentication] database: expected a Redis database number, got 'one'"),
    (AUTH.format(backend="mongodb") + "server = m\ndatabase = d\n",
     "gw.ini: [authentication] collection: missing, expected the collection of the users"),
    (AUTH.format(backend="mongodb") + "mongo_type = rs\n",
     "gw.ini: [authentication] mongo_type: expected one of single, got 'rs'"),
    ("[authentication.filter]\nusername = ${username}\n",
     "gw.ini: [authentication.filter]: needs an [authentication] section"),
    (AUTH.format(backend="mongodb") + "[authentication.nope]\n",
     "gw.ini: [authentication.nope]: unknown section"),
    ("[gateway]\ndata_dir =\n", "gw.ini: [gateway] data_dir: must not be empty"),
]  # fmt: skip


class AuthenticationConfigTests(SynchronousTestCase):
    """[authentication]: every key read into AuthenticationSection, the chosen backend's checks."""

    def test_absent_or_disabled(self) -> None:
        """No section, or enable = false (whatever else is missing), means no authenticator."""
        self.assertIsNone(config_from_string(LISTENER).authentication)
        self.assertIsNone(auth_of("[authentication]\nenable = false\n"))
        self.assertIsNone(auth_of("[authentication]\nenable = off\nbackend = http\n"))

    def test_built_in_database(self) -> None:
        """The issue's example: the hashing keys and user_id_type."""
        section = auth_of(
            AUTH.format(backend="built_in_database")
            + "user_id_type = clientid\npassword_hash_algorithm = sha256\nsalt_position = suffix\n"
        )
        self.assertEqual(
            section,
            AuthenticationSection(
                backend="built_in_database", user_id_type="clientid", salt_position="suffix"
            ),
        )

    def test_hashing_keys(self) -> None:
        """pbkdf2's and bcrypt's keys, and the common durations."""
        section = auth_of(
            AUTH.format(backend="mysql") + "server = db\ndatabase = d\nquery = SELECT 1\n"
            "password_hash_algorithm = PBKDF2\nmac_fun = sha512\niterations = 10\ndk_length = 32\n"
            "salt_rounds = 12\nrequest_timeout = 2500ms\ncache_ttl = 1m\n"
        )
        assert section is not None
        self.assertEqual(
            (section.password_hash_algorithm, section.mac_fun, section.iterations, section.dk_length),
            ("pbkdf2", "sha512", 10, 32),
        )
        self.assertEqual((section.salt_rounds, section.request_timeout, section.cache_ttl), (12, 2.5, 60.0))
        self.assertEqual(section.server, "db:3306")

    def test_each_problem_line(self) -> None:
        """Each bad [authentication] gives this exact line."""
        for text, line in AUTH_BAD:
            problems = problems_of(self, with_listener(text), environ={})
            self.assertIn(line, problems, f"for {text!r}")

    def test_mechanism_jwt_alone(self) -> None:
        """``mechanism = jwt`` without backend chooses the jwt backend."""
        section = auth_of("[authentication]\nmechanism = jwt\nsecret = s\n")
        assert section is not None
        self.assertEqual((section.backend, section.mechanism), ("jwt", "jwt"))

    def test_placeholders_stay(self) -> None:
        """The six placeholders stay in values and subsections; other ${NAME} come from the environment."""
        section = auth_of(
            AUTH.format(backend="http") + "url = http://auth.${DOMAIN}/a?cid=${clientid}&host=${peerhost}\n"
            "[authentication.body]\nuser = ${username}\npass = ${password}\ncn = ${cert_common_name}\n"
            "dn = ${cert_subject}\nsite = ${SITE}\n",
            environ={"DOMAIN": "example", "SITE": "s1"},
        )
        assert section is not None
        self.assertEqual(section.url, "http://auth.example/a?cid=${clientid}&host=${peerhost}")
        self.assertEqual(
            dict(section.body),
            {"user": "${username}", "pass": "${password}", "cn": "${cert_common_name}",
             "dn": "${cert_subject}", "site": "s1"},
        )  # fmt: skip

    def test_http_headers(self) -> None:
        """post: header names in lower case, merged over content-type: application/json; get: none added."""
        post = auth_of(
            AUTH.format(backend="http") + "url = http://h/a\n[authentication.headers]\nX-Api-Key = ${KEY}\n",
            environ={"KEY": "k1"},
        )
        assert post is not None
        self.assertEqual(dict(post.headers), {"content-type": "application/json", "x-api-key": "k1"})
        self.assertEqual(post.method, "post")
        form = auth_of(
            AUTH.format(backend="http")
            + "url = http://h/a\n[authentication.headers]\ncontent-type = application/x-www-form-urlencoded\n"
        )
        assert form is not None
        self.assertEqual(dict(form.headers), {"content-type": "application/x-www-form-urlencoded"})
        get = auth_of(AUTH.format(backend="http") + "url = https://h/a\nmethod = GET\nssl_verify = false\n")
        assert get is not None
        self.assertEqual((get.method, dict(get.headers), get.ssl_verify), ("get", {}, False))

    def test_jwt(self) -> None:
        """jwt's keys: from (jwt_from), the public key file, claims with ${clientid} and ${username}."""
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "key.pem").write_text("-----BEGIN PUBLIC KEY-----\n", encoding="ascii")
        section = auth_of(
            AUTH.format(backend="jwt") + "from = username\nalgorithm = public-key\npublic_key = key.pem\n"
            "refresh_interval = 1m\n[authentication.verify_claims]\nsub = ${clientid}\nname = ${username}\n",
            base_dir=directory,
        )
        assert section is not None
        self.assertEqual((section.jwt_from, section.algorithm), ("username", "public-key"))
        self.assertEqual(section.public_key, directory / "key.pem")
        self.assertEqual(dict(section.verify_claims), {"sub": "${clientid}", "name": "${username}"})
        jwks = auth_of(AUTH.format(backend="jwt") + "use_jwks = true\nendpoint = https://idp/jwks\n")
        assert jwks is not None
        self.assertEqual(
            (jwks.use_jwks, jwks.endpoint, jwks.refresh_interval), (True, "https://idp/jwks", 300.0)
        )
        b64 = auth_of(AUTH.format(backend="jwt") + "secret = c2VjcmV0\nsecret_base64_encoded = true\n")
        assert b64 is not None
        self.assertTrue(b64.secret_base64_encoded)

    def test_servers(self) -> None:
        """server gets the backend's default port; IPv6 in brackets; redis database defaults to 0."""
        pg = auth_of(AUTH.format(backend="postgresql") + "server = [::1]\ndatabase = d\nquery = SELECT 1\n")
        assert pg is not None
        self.assertEqual(pg.server, "[::1]:5432")
        redis = auth_of(AUTH.format(backend="redis") + "server = r:7000\ncmd = HGET u:${username} password\n")
        assert redis is not None
        self.assertEqual((redis.server, redis.database, redis.redis_type), ("r:7000", "0", "single"))
        mongo = auth_of(
            AUTH.format(backend="mongodb") + "server = m\ndatabase = d\ncollection = users\n"
            "password_hash_field = ph\nauth_source = admin\n[authentication.filter]\nusername = ${username}\n"
        )
        assert mongo is not None
        self.assertEqual(
            (mongo.server, mongo.collection, mongo.password_hash_field), ("m:27017", "users", "ph")
        )
        self.assertEqual((mongo.auth_source, dict(mongo.filter)), ("admin", {"username": "${username}"}))

    def test_secrets_never_shown(self) -> None:
        """Database passwords, JWT secrets and header values are in no problem line and no repr."""
        secret = "Sup3r-Secret-Value"
        section = auth_of(
            AUTH.format(backend="http") + f"url = http://h/a\npassword = {secret}\nsecret = {secret}\n"
            f"[authentication.headers]\nauthorization = Bearer {secret}\n"
        )
        self.assertNotIn(secret, repr(section))
        for text in [
            AUTH.format(backend="jwt") + f"secret = {secret}!\nsecret_base64_encoded = true\n",
            AUTH.format(backend="mysql") + f"password = {secret}${{oops\n",
            AUTH.format(backend="http") + f"[authentication.headers]\nauthorization = {secret}${{oops\n",
        ]:
            error = self.assertRaises(ConfigError, config_from_string, with_listener(text), environ={})
            self.assertNotIn(secret, str(error), text)

    def test_data_dir(self) -> None:
        """data_dir defaults to data next to gw.ini; a relative one is taken from there, an absolute
        one kept."""
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        path = directory / "gw.ini"
        path.write_text(LISTENER, encoding="utf-8")
        self.assertEqual(load_config(path).gateway.data_dir, directory / "data")
        path.write_text("[gateway]\ndata_dir = state/users\n" + LISTENER, encoding="utf-8")
        self.assertEqual(load_config(path).gateway.data_dir, directory / "state" / "users")
        path.write_text("[gateway]\ndata_dir = /var/lib/ocppgw\n" + LISTENER, encoding="utf-8")
        self.assertEqual(load_config(path).gateway.data_dir, Path("/var/lib/ocppgw"))


class BrokerTests(SynchronousTestCase):
    """[mqtt] broker: the topics the gateway names must reach that broker."""

    def test_generic_carries_everything(self) -> None:
        config = config_from_string("[gateway]\nnode_name = gw1.example.com\nmountpoint = a.b/\n" + LISTENER)
        self.assertEqual(config.mqtt.broker, "generic")

    def test_unknown_broker(self) -> None:
        (problem,) = problems_of(self, "[mqtt]\nbroker = kafka\n" + LISTENER)
        self.assertIn("[mqtt] broker:", problem)

    def test_host_name_with_dots_on_nats(self) -> None:
        """The default node name is the host name: its dots would be in the node's will topic."""
        (problem,) = problems_of(
            self, "[gateway]\nnode_name = gw1.example.com\n[mqtt]\nbroker = nats\n" + LISTENER
        )
        self.assertEqual(
            problem,
            "gw.ini: [gateway] node_name: must not contain '.': [mqtt] broker = nats cannot carry it in a "
            "topic, got 'gw1.example.com'",
        )
        config_from_string(
            "[gateway]\nnode_name = gw1.example.com\n[mqtt]\nbroker = nats\n[presence]\nenable = false\n"
            + LISTENER
        )

    def test_every_topic_key_checked(self) -> None:
        text = (
            "[gateway]\nnode_name = gw1\nmountpoint = o.cpp/\n[upstream]\ntopic = cp/${cid}.x\n"
            "[upstream.topic_override_mapping]\nBootNotification = cp/*/${cid}\n"
            "[dnstream]\ntopic = cs/${cid}/*\n"
            "[presence]\ntopic = p/${cid}\nnode_topic = n.${node}\n[mqtt]\nbroker = rabbitmq\n"
            + LISTENER
            + "mountpoint = l.m/\n"
        )
        keys = [line.split(":")[1].strip() for line in problems_of(self, text)]
        self.assertEqual(
            keys,
            [
                "[gateway] mountpoint",
                "[upstream] topic",
                "[dnstream] topic",
                "[presence] node_topic",
                "[upstream.topic_override_mapping] BootNotification",
                "[listeners.ws.default] mountpoint",
            ],
        )

    def test_no_qos_2_publish_on_nats(self) -> None:
        text = (
            "[upstream]\nqos = 2\n[presence]\nqos = 2\n[dnstream]\nqos = 2\n[mqtt]\nbroker = nats\n"
            + LISTENER
        )
        problems = problems_of(self, text)
        self.assertEqual([p.split(":")[1].strip() for p in problems], ["[upstream] qos", "[presence] qos"])
        self.assertEqual(config_from_string(text.replace("nats", "rabbitmq")).upstream.qos, 2)

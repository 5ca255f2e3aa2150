"""gw.ini into a ``GatewayConfig``: read the file, check keys against each other, build the sections.

Every problem is collected before anything is raised, so an operator fixes a bad file in one
round; each line names the section and the key.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ocppgw.config import authentication, sections
from ocppgw.config import values as v
from ocppgw.config.errors import ConfigError, problem_line
from ocppgw.config.ini import OVERRIDE_SECTION, IniReader, IniValues, whitelist
from ocppgw.core.topics import unsafe_problem

_TLS_KEYS = tuple(item.name for item in fields(sections.TlsSection))  # the TLS keys of a wss listener
_FIELDS = frozenset(item.name for item in fields(sections.ListenerSection))


def read_text_file(path: Path) -> str:
    """A UTF-8 text file (a BOM dropped), or ``ValueError`` whose message says why not in one line."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise ValueError(f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(
            f"cannot read: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})"
        ) from None
    except ValueError as e:  # for example a NUL in the path
        raise ValueError(f"cannot read: {e}") from None


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> sections.GatewayConfig:
    """Read and check the INI file at ``path``; relative paths in it are taken from its directory.

    The management API's ``<data_dir>/overrides.json`` is layered over it (``ocppgw.api.overrides``
    says how); ``overrides`` given instead checks a change before it is saved.
    """
    from ocppgw.api.overrides import overrides_path, read_overrides  # the API's module, light

    source = str(path)
    try:
        text = read_text_file(Path(path))
    except ValueError as e:
        raise ConfigError([f"{source}: {e}"]) from None
    base_dir = Path(path).absolute().parent
    config = config_from_string(text, source=source, base_dir=base_dir)
    data_dir = config.gateway.data_dir
    if overrides is None:
        overrides = read_overrides(data_dir)
    if not overrides:
        return config
    layered = str(overrides_path(data_dir))
    return config_from_string(text, source=source, base_dir=base_dir, overrides=(overrides, layered))


def config_from_string(
    text: str,
    source: str = "gw.ini",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: tuple[Mapping[str, Any], str] | None = None,
) -> sections.GatewayConfig:
    """Check INI ``text`` and build the config, or raise ``ConfigError`` listing every problem.

    ``source`` starts every problem line; relative paths are resolved against
    ``base_dir`` (the current directory when None); ``${NAME}`` is looked up in
    ``environ`` (``os.environ`` when None); ``overrides``: sections layered over ``text`` and the
    name their problems carry (``ocppgw.api.overrides``).
    """
    base = Path.cwd() if base_dir is None else Path(base_dir)
    env = os.environ if environ is None else environ
    if overrides is None:
        reader = IniReader(source, whitelist(base), env)
    else:
        from ocppgw.api.overrides import OverlayReader

        reader = OverlayReader(
            source, whitelist(base), env, sections=overrides[0], overrides_source=overrides[1]
        )
    found = reader.read(text.removeprefix("\ufeff"))
    config = _Builder(source, found, reader.problems, base).build()
    if reader.problems:
        raise ConfigError(reader.problems)
    assert config is not None
    return config


class _Builder:
    """The typed sections of what the reader found, after the checks across keys."""

    def __init__(self, source: str, found: IniValues, problems: list[str], base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.found = found
        self.problems = problems  # shared with the reader: one list, in the order found

    def problem(self, section: str, key: str | None, reason: str) -> None:
        self.problems.append(problem_line(self.source, section, key, reason))

    def written(self, section: str, key: str) -> bool:
        """Whether the file sets ``key`` in ``section``, valid or not."""
        return (section, key) in self.found.written

    def build(self) -> sections.GatewayConfig | None:
        """The config, or None when there is any problem."""
        found = self.found.sections
        gateway_values = found.get("gateway", {})
        if not self.written("gateway", "data_dir"):
            gateway_values["data_dir"] = self.base_dir / "data"
        if not gateway_values.get("node_name"):
            gateway_values["node_name"] = socket.gethostname()
        mqtt_values = found.get("mqtt", {})
        if not mqtt_values.get("client_id"):
            mqtt_values["client_id"] = f"ocppgw-{gateway_values['node_name']}"
        self.check_reconnect_delays(mqtt_values)
        self.check_mqtt_tls(mqtt_values)
        api_values = found.get("api", {})
        self.check_api(api_values)
        listeners = self.build_listeners()
        self.check_broker(mqtt_values.get("broker", sections.MqttSection.broker), gateway_values, listeners)
        auth = None
        if authentication.SECTION in found:
            auth = authentication.build(found[authentication.SECTION], self.found.mappings, self)
        else:
            for section in self.found.mappings:
                if section.startswith(authentication.SECTION + "."):
                    self.problem(section, None, f"needs an [{authentication.SECTION}] section")
        if self.problems:
            return None
        return sections.GatewayConfig(
            gateway=sections.GatewaySection(**gateway_values),
            upstream=sections.UpstreamSection(
                **found.get("upstream", {}),
                topic_override_mapping=MappingProxyType(self.found.mappings.get(OVERRIDE_SECTION, {})),
            ),
            dnstream=sections.DnstreamSection(**found.get("dnstream", {})),
            mqtt=sections.MqttSection(**mqtt_values),
            presence=sections.PresenceSection(**found.get("presence", {})),
            listeners=listeners,
            source=self.source,
            authentication=auth,
            api=sections.ApiSection(**api_values),
        )

    def check_api(self, values: dict[str, Any]) -> None:
        """``[api]``: bind as host and port; certfile and keyfile come together."""
        if "bind" in values:
            values["host"], values["port"] = values.pop("bind")
        for key, other in (("certfile", "keyfile"), ("keyfile", "certfile")):
            if values.get(key) is not None and values.get(other) is None and not self.written("api", other):
                self.problem("api", other, f"missing, expected the path of a PEM file (set with {key})")

    def check_mqtt_tls(self, values: dict[str, Any]) -> None:
        """``[mqtt]`` certfile and keyfile come together."""
        for key, other in (("certfile", "keyfile"), ("keyfile", "certfile")):
            if values.get(key) is not None and values.get(other) is None and not self.written("mqtt", other):
                self.problem("mqtt", other, f"missing, expected the path of a PEM file (set with {key})")

    def check_reconnect_delays(self, values: dict[str, Any]) -> None:
        """``[mqtt]`` reconnect_delay_min is not above reconnect_delay_max, given or default."""
        low = values.get("reconnect_delay_min", sections.MqttSection.reconnect_delay_min)
        high = values.get("reconnect_delay_max", sections.MqttSection.reconnect_delay_max)
        for key in ("reconnect_delay_min", "reconnect_delay_max"):
            if self.written("mqtt", key) and key not in values:
                return  # already reported
        if low > high:
            given = self.found.texts.get(("mqtt", "reconnect_delay_max"))
            self.problem(
                "mqtt",
                "reconnect_delay_max",
                f"must not be less than reconnect_delay_min ({v.seconds(low)}), "
                + (v.got(given) if given is not None else f"got the default {v.seconds(high)}"),
            )

    def check_broker(
        self, broker: str, gateway: dict[str, Any], listeners: tuple[sections.ListenerSection, ...]
    ) -> None:
        """``[mqtt] broker``: every topic the gateway names can reach that broker (README, "Brokers")."""
        if broker == "generic":
            return
        found = {**self.found.sections, "gateway": gateway}
        texts: list[tuple[str, str, str]] = [
            (section, key, value)
            for section, keys in (
                ("gateway", ("mountpoint",)),
                ("upstream", ("topic", "reply_topic", "error_topic")),
                ("dnstream", ("topic",)),
                ("presence", ("topic", "node_topic")),
            )
            for key in keys
            if isinstance(value := found.get(section, {}).get(key), str)
        ]
        texts.extend(
            (OVERRIDE_SECTION, action, topic)
            for action, topic in self.found.mappings.get(OVERRIDE_SECTION, {}).items()
        )
        texts.extend(
            (listener.section, "mountpoint", listener.mountpoint)
            for listener in listeners
            if listener.mountpoint
        )
        node = gateway["node_name"]  # in the node's presence topic, also its will: host names hold dots
        if found.get("presence", {}).get("enable", True) and unsafe_problem(node, broker):
            texts.append(("gateway", "node_name", node))
        for section, key, text in texts:
            problem = unsafe_problem(text, broker)
            if problem is not None:
                self.problem(section, key, problem)
        if broker == "nats":
            for section in ("upstream", "presence"):
                if found.get(section, {}).get("qos") == 2:
                    self.problem(
                        section,
                        "qos",
                        "must be 0 or 1: [mqtt] broker = nats closes the connection on a QoS 2 publish",
                    )

    def build_tls(self, section: str, values: dict[str, Any]) -> sections.TlsSection | None:
        """The ``TlsSection`` of a wss section's TLS keys, taken out of ``values``; None after a problem."""
        tls = {key: values.pop(key) for key in list(values) if key in _TLS_KEYS}
        ok = True
        for key in ("certfile", "keyfile"):
            if tls.get(key) is None:
                ok = False
                if not self.written(section, key) or not self.found.texts.get((section, key), "x"):
                    self.problem(section, key, "missing, expected the path of a PEM file")
        if any(self.written(section, key) and key not in tls for key in _TLS_KEYS):
            ok = False  # already reported
        verify = tls.get("verify", sections.TlsSection.verify)
        if verify == "verify_peer" and tls.get("cacertfile") is None:
            ok = False
            self.problem(
                section, "cacertfile", "missing, verify_peer needs the CA file that signs client certificates"
            )
        if (
            tls.get("client_cert_identity", sections.TlsSection.client_cert_identity) != "none"
            and verify != "verify_peer"
        ):
            ok = False
            self.problem(
                section, "client_cert_identity", f"needs verify = verify_peer, got verify = {verify}"
            )
        if tls.get("fail_if_no_peer_cert") and verify != "verify_peer":
            ok = False
            self.problem(
                section, "fail_if_no_peer_cert", f"needs verify = verify_peer, got verify = {verify}"
            )
        if not ok:
            return None
        if tls.get("cacertfile") is None:
            tls.pop("cacertfile", None)
        return sections.TlsSection(**tls)

    def build_listeners(self) -> tuple[sections.ListenerSection, ...]:
        """One ``ListenerSection`` per listener section; two may not bind the same address."""
        built: list[sections.ListenerSection] = []
        taken: dict[tuple[str, int], sections.ListenerSection] = {}
        for section, kind, name, values in self.found.listeners:
            if kind == "wss":
                values["tls"] = self.build_tls(section, values)
                if values["tls"] is None:
                    continue
            if "bind" not in values:
                continue
            host, port = values.pop("bind")
            values["ignored_options"] = _ignored_options(values)
            listener = sections.ListenerSection(kind=kind, name=name, host=host, port=port, **values)
            if port != 0:
                address = (v.normal_host(host), port)
                if address in taken:
                    self.problem(
                        section, "bind", f"{host}:{port} is already used by [{taken[address].section}]"
                    )
                    continue
                taken[address] = listener
            built.append(listener)
        return tuple(built)


def _ignored_options(values: dict[str, Any]) -> tuple[str, ...]:
    """The ``IGNORED_LISTENER_OPTIONS`` that ``values`` sets to no effect; those without a field go.

    ``reuseaddr = true`` is what Twisted does anyway, so only ``reuseaddr = false`` counts.
    """
    ignored = []
    for key in sections.IGNORED_LISTENER_OPTIONS:
        if key in _FIELDS:
            if values.get(key) is False:
                ignored.append(key)
        elif values.pop(key, None) is not None:
            ignored.append(key)
    return tuple(ignored)

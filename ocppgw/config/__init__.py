"""gw.ini: a whitelisted INI file parsed once into frozen dataclasses.

Every problem is collected before anything is raised, so an operator fixes a bad file in one
round; each line names the section and the key (``problem_line``).

Values may refer to environment variables as ``${NAME}`` (for secrets such as
``password = ${MQTT_PASSWORD}``); they are substituted once, at load time.
``${cid}`` (alias ``${clientid}``) and, in ``[presence] node_topic`` only,
``${node}`` are topic template variables, filled in per charge point later
(``ocppgw.core.topics`` holds their rules).

Modules: ``errors`` (the problem line), ``values`` (one value's converters), ``ini`` (INI syntax,
the whitelist, ``${NAME}``), ``sections`` (the dataclasses), ``loader`` (checks across keys).
"""

from ocppgw.config.errors import ConfigError, problem_line
from ocppgw.config.loader import config_from_string, load_config
from ocppgw.config.sections import (
    IGNORED_LISTENER_OPTIONS,
    ApiSection,
    AuthenticationSection,
    DnstreamSection,
    GatewayConfig,
    GatewaySection,
    ListenerSection,
    MqttSection,
    PresenceSection,
    TlsSection,
    UpstreamSection,
)
from ocppgw.config.values import (
    CHECKING_MODES,
    CLIENT_CERT_IDENTITIES,
    NETWORK_LOOPS,
    TLS_VERSIONS,
    VERIFY_MODES,
    parse_bind,
    parse_duration,
)

__all__ = [
    "CHECKING_MODES",
    "CLIENT_CERT_IDENTITIES",
    "IGNORED_LISTENER_OPTIONS",
    "NETWORK_LOOPS",
    "TLS_VERSIONS",
    "VERIFY_MODES",
    "ApiSection",
    "AuthenticationSection",
    "ConfigError",
    "DnstreamSection",
    "GatewayConfig",
    "GatewaySection",
    "ListenerSection",
    "MqttSection",
    "PresenceSection",
    "TlsSection",
    "UpstreamSection",
    "config_from_string",
    "load_config",
    "parse_bind",
    "parse_duration",
    "problem_line",
]

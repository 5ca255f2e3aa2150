"""Counters, gauges and histograms an operator reads to see what the gateway did, dropped or refused.

Every metric is declared once in ``_METRICS`` and lives as a ``prometheus_client`` object in the
registry of one ``Metrics``, never in the process-wide default registry, so tests and several
gateways in one process keep apart. Call sites name a metric by its short name; the bound child of
each label set is cached, so a per-message ``inc`` is one dict lookup and the child's own ``inc``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.samples import Sample

# The exposition shows what happened, not when each series began: no ``*_created`` samples.
# prometheus_client only offers this switch process-wide; it is read when a metric is created.
disable_created_metrics()

NAMESPACE = "ocppgw"

# A charge point answers in milliseconds on a LAN and in seconds over a cellular modem; the reply
# timeout defaults to 30 s and may be set higher.
ROUND_TRIP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_Kind = type[Counter] | type[Gauge] | type[Histogram]

# name -> (kind, HELP text, label names). Counters are exposed as ocppgw_<name>_total, the others
# as ocppgw_<name>.
_METRICS: dict[str, tuple[_Kind, str, tuple[str, ...]]] = {
    # WebSocket listeners
    "connections_refused": (Counter, "connections refused by a listener's limits", ("listener", "reason")),
    "send_timeouts": (Counter, "peers that stopped reading for longer than send_timeout", ("listener",)),
    "handshakes_refused": (Counter, "PROXY, TLS or WebSocket handshakes refused", ("status", "reason")),
    "frames_invalid": (Counter, "frames from charge points that are not valid OCPP-J", ("code",)),
    "inflight_refused": (Counter, "connections closed 1009 past max_inflight_bytes", ("listener",)),
    "inflight_bytes": (Gauge, "bytes of WebSocket messages being received now, all listeners", ()),
    "memory_trims": (Counter, "times freed memory was handed back to the OS (malloc_trim)", ()),
    # the process (ocppgw.runtime)
    "event_loop_lag_seconds": (Histogram, "how late a timer due every 50 ms fired: reactor stalls", ()),
    "event_loop_lag_max_seconds": (Gauge, "the worst event-loop lag of the last minute", ()),
    "gc_pause_seconds": (
        Histogram, "garbage collections, by generation: the reactor stops meanwhile", ("generation",)
    ),
    # charge point sessions
    "frames_received": (Counter, "OCPP-J frames received from charge points", ("action",)),
    "calls_refused": (Counter, "charge point Calls refused because the broker link was full", ("action",)),
    "schema_missing": (Counter, "payloads not checked because no schema is known", ("action", "kind")),
    "schema_rejected": (Counter, "payloads that failed their schema", ("direction", "action")),
    "replies_late": (Counter, "replies from charge points after their Call timed out", ()),
    "replies_unsolicited": (Counter, "replies from charge points to no Call sent to them", ()),
    "replies_dropped": (Counter, "replies and gateway errors not published: broker link full", ()),
    "envelopes_invalid": (Counter, "downstream MQTT messages that are not valid envelopes", ()),
    "dnstream_dropped": (Counter, "downstream Calls dropped because the queue was full", ("action",)),
    "reply_timeouts": (Counter, "downstream Calls the charge point did not answer in time", ("action",)),
    "liveness_closes": (Counter, "charge points closed after a silence longer than allowed", ()),
    "outgoing_oversized": (
        Counter, "messages for charge points not sent: frame over max_outgoing_frame_size", ("kind",)
    ),
    "downstream_round_trip_seconds": (
        Histogram,
        "time from sending a downstream Call to the charge point to its reply",
        ("action",),
    ),
    # router
    "connects": (Counter, "charge points attached", ()),
    "disconnects": (
        Counter,
        "charge points detached, by cause: charge_point, connection_lost, gateway, ping_timeout, "
        "send_timeout, protocol_error, frame_too_big, takeover, shutdown",
        ("reason",),
    ),
    "takeovers": (Counter, "connections closed because the same charge point connected again", ()),
    "published": (Counter, "envelopes from charge points accepted by the broker link", ("kind",)),
    "envelopes_unroutable": (Counter, "downstream messages for charge points not connected", ()),
    "presence_deferred": (
        Counter,
        "presence, node state and takeover claim messages held back because the broker link buffer was full",
        (),
    ),
    "presence_waiting": (
        Gauge, "presence, node state and takeover claim messages waiting for room in the broker link", ()
    ),
    "presence_lost_on_stop": (Counter, "presence messages not published when the link stopped", ()),
    "connected_charge_points": (Gauge, "charge points connected now", ()),
    "lingering_subscriptions": (
        Gauge,
        "downstream subscriptions kept for charge points that disconnected ([dnstream] subscription_linger)",
        (),
    ),
    # authentication
    "auth_decisions": (Counter, "handshakes decided by the authenticator", ("backend", "result")),
    "auth_cache_hits": (Counter, "handshakes allowed from the authentication cache", ("backend",)),
    # MQTT link
    "mqtt_connect_attempts": (Counter, "connection attempts to the broker", ()),
    "mqtt_connect_refused": (Counter, "connections the broker refused in its CONNACK", ()),
    "mqtt_connect_failures": (Counter, "connection attempts that did not reach the broker", ()),
    "mqtt_tls_refused": (Counter, "TLS handshakes with the broker that failed", ()),
    "mqtt_reconnects": (Counter, "connections to the broker after the first", ()),
    "mqtt_published": (Counter, "messages handed to the MQTT client", ()),
    "mqtt_publish_refused": (Counter, "messages refused because the outgoing buffer was full", ()),
    "mqtt_publish_dropped": (Counter, "held messages the MQTT client rejected when sent", ()),
    "mqtt_subscribe_refused": (Counter, "subscriptions the broker refused", ()),
    "mqtt_received": (Counter, "messages received from the broker", ()),
    "mqtt_unroutable": (Counter, "messages from the broker that no subscription matches", ()),
    "mqtt_handler_errors": (Counter, "messages from the broker whose handler raised", ()),
    "mqtt_lost_on_stop": (Counter, "messages not acknowledged or not sent when the link stopped", ()),
    "mqtt_connected": (Gauge, "1 while connected to the broker", ()),
    "mqtt_outstanding": (
        Gauge,
        "accepted messages not yet acknowledged by the broker (QoS>0) or not yet sent",
        (),
    ),
    "mqtt_held": (Gauge, "accepted messages held while disconnected", ()),
}


class Metrics:
    """The gateway's metrics in a registry of their own.

    Counters and the histogram exist from the start; a gauge appears once ``gauge`` gives it a reader.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_cpu_seconds_total, process_resident_memory_bytes, ... (Linux /proc; none elsewhere)
        ProcessCollector(registry=self.registry)
        self._metrics: dict[str, Any] = {}
        for name, (kind, text, labels) in _METRICS.items():
            if kind is not Gauge:
                extra = {"buckets": ROUND_TRIP_BUCKETS} if kind is Histogram else {}
                self._metrics[name] = kind(
                    name, text, labels, namespace=NAMESPACE, registry=self.registry, **extra
                )
        # name, or (name, *label items) -> the bound ``inc`` or ``observe`` of that series.
        self._incs: dict[str | tuple[Any, ...], Callable[[float], None]] = {}
        self._observes: dict[str | tuple[Any, ...], Callable[[float], None]] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` with these labels."""
        key = (name, *labels.items()) if labels else name
        try:
            self._incs[key](amount)
        except KeyError:
            self._incs[key] = self._series(Counter, name, labels).inc
            self._incs[key](amount)

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record ``value`` in the histogram ``name`` with these labels."""
        key = (name, *labels.items()) if labels else name
        if key not in self._observes:
            self._observes[key] = self._series(Histogram, name, labels).observe
        self._observes[key](value)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Expose the gauge ``name`` (declared in ``_METRICS``), calling ``read`` whenever collected."""
        spec = _METRICS.get(name)
        if spec is None or spec[0] is not Gauge or spec[2]:
            raise TypeError(f"{name} is not declared as a gauge without labels")
        gauge = self._metrics.get(name)
        if gauge is None:
            gauge = self._metrics[name] = Gauge(name, spec[1], namespace=NAMESPACE, registry=self.registry)
        gauge.set_function(read)

    def value(self, name: str, **labels: str) -> float:
        """A counter's or gauge's current value for exactly these labels; 0 when there is none."""
        return sum(sample.value for sample in self._samples(name) if sample.labels == labels)

    def total(self, name: str) -> float:
        """A counter summed over all its label sets."""
        return sum(sample.value for sample in self._samples(name))

    def _series(self, kind: _Kind, name: str, labels: dict[str, str]) -> Any:
        """The child of ``name`` for ``labels``, checking the kind the caller expects."""
        metric = self._metrics.get(name)
        if not isinstance(metric, kind):
            raise TypeError(f"{name} is not declared as a {kind.__name__.lower()}")
        return metric.labels(**labels) if labels else metric

    def _samples(self, name: str) -> Iterator[Sample]:
        """The samples that carry the value of a counter or gauge (not histograms)."""
        if name not in _METRICS:
            raise KeyError(f"no metric {name!r} is declared")
        metric = self._metrics.get(name)
        if metric is None:  # a gauge nothing reads yet
            return
        full = f"{NAMESPACE}_{name}" + ("_total" if isinstance(metric, Counter) else "")
        for family in metric.collect():
            for sample in family.samples:
                if sample.name == full:
                    yield sample

"""``/metrics`` of a node with workers: every worker's Prometheus text, parsed and summed.

Why not ``prometheus_client``'s multiprocess mode: it keeps values in files under
``PROMETHEUS_MULTIPROC_DIR`` through value classes chosen once per process, and cannot serve the
callback gauges the gateway reads at collection time (``Metrics.gauge``: connected charge points,
MQTT state); each worker already has its own registry, so the master asks each for its text over the
control channel and adds them up.

Counters, gauges and histogram buckets (with ``_sum`` and ``_count``) are summed per label set, so
``ocppgw_connected_charge_points`` is the node's and ``ocppgw_mqtt_connected`` counts the connected
workers; ``process_start_time_seconds`` and ``process_max_fds`` keep the smallest value, since a sum
of either means nothing, and a gauge of a worst case (``*_max_seconds``, such as
``ocppgw_event_loop_lag_max_seconds``) keeps the largest: the node's worst is its worst worker's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

_SMALLEST = frozenset({"process_start_time_seconds", "process_max_fds"})
_LARGEST_SUFFIX = "_max_seconds"

_Key = tuple[str, tuple[tuple[str, str], ...]]


class _Merged:
    """A collector yielding the merged families (for ``generate_latest``)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge(texts: Iterable[str]) -> bytes:
    """The Prometheus text of the sum of ``texts`` (each one worker's exposition)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[_Key, float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            merged = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sample.labels.items()))
                if key not in merged:
                    merged[key] = sample.value
                elif sample.name in _SMALLEST:
                    merged[key] = min(merged[key], sample.value)
                elif sample.name.endswith(_LARGEST_SUFFIX):
                    merged[key] = max(merged[key], sample.value)
                else:
                    merged[key] += sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(families.values())))  # type: ignore[arg-type]
    return generate_latest(registry)

"""Counters and gauges an operator reads to see what the gateway dropped or refused.

Kept dependency-free: a dict of labelled counters, rendered in the Prometheus
text format on demand.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

LabelSet = tuple[tuple[str, str], ...]


class Metrics:
    """Labelled counters plus gauges computed when read."""

    def __init__(self, namespace: str = "ocppgw") -> None:
        self._namespace = namespace
        self._counters: dict[str, dict[LabelSet, float]] = defaultdict(lambda: defaultdict(float))
        self._help: dict[str, str] = {}
        self._gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` with these labels."""
        # Runs several times per message: one label or none needs no sorting.
        key = tuple(labels.items()) if len(labels) < 2 else tuple(sorted(labels.items()))
        self._counters[name][key] += amount

    def value(self, name: str, **labels: str) -> float:
        """The counter's current value; 0 when never incremented."""
        series = self._counters.get(name)
        if series is None:
            return 0
        return series.get(tuple(sorted(labels.items())), 0)

    def total(self, name: str) -> float:
        """The counter summed over all label sets."""
        return sum(self._counters.get(name, {}).values())

    def describe(self, name: str, text: str) -> None:
        """Attach a HELP line to a metric."""
        self._help[name] = text

    def gauge(self, name: str, read: Callable[[], float], text: str = "") -> None:
        """Register a gauge whose value is read when metrics are rendered."""
        self._gauges[name] = read
        if text:
            self._help[name] = text

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        lines: list[str] = []
        for name in sorted(self._counters):
            full = f"{self._namespace}_{name}_total"
            if name in self._help:
                lines.append(f"# HELP {full} {self._help[name]}")
            lines.append(f"# TYPE {full} counter")
            for labels, amount in sorted(self._counters[name].items()):
                lines.append(f"{full}{_labels(labels)} {amount:g}")
        for name in sorted(self._gauges):
            full = f"{self._namespace}_{name}"
            if name in self._help:
                lines.append(f"# HELP {full} {self._help[name]}")
            lines.append(f"# TYPE {full} gauge")
            lines.append(f"{full} {self._gauges[name]():g}")
        return "\n".join(lines) + "\n"


def _labels(labels: LabelSet) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

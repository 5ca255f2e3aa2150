"""Metrics: prometheus_client objects in a registry per instance, and the names the code uses."""

from __future__ import annotations

import ast
from pathlib import Path

import prometheus_client
from prometheus_client import generate_latest
from twisted.trial.unittest import SynchronousTestCase

import ocppgw
from ocppgw import metrics as metrics_module
from ocppgw.metrics import Metrics
from tests.test_session import SessionTestCase, dn_call, frame


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode("utf-8")


class RegistryTests(SynchronousTestCase):
    """Each Metrics has its own registry; nothing goes to prometheus_client's default one."""

    def test_instances_apart(self) -> None:
        """A count in one Metrics is not seen in another."""
        one, two = Metrics(), Metrics()
        one.inc("published", kind="Call")
        self.assertIsNot(one.registry, two.registry)
        self.assertEqual(one.value("published", kind="Call"), 1)
        self.assertEqual(two.value("published", kind="Call"), 0)
        self.assertIn('ocppgw_published_total{kind="Call"} 1.0\n', exposition(one))
        self.assertNotIn('ocppgw_published_total{kind="Call"}', exposition(two))

    def test_default_registry_untouched(self) -> None:
        """The process-wide default registry holds no ocppgw metric."""
        Metrics().inc("connects")
        names = [m.name for m in prometheus_client.REGISTRY.collect()]
        self.assertEqual([n for n in names if n.startswith("ocppgw")], [])


class ExpositionTests(SynchronousTestCase):
    """Names, labels and HELP texts as an operator sees them."""

    def test_counter_names_and_labels(self) -> None:
        """Counters are ocppgw_<name>_total, with the labels given, sorted by name."""
        metrics = Metrics()
        metrics.inc("handshakes_refused", status="proxy", reason="proxy_header_timeout")
        metrics.inc("connections_refused", listener="ws.default", reason="max_connections")
        metrics.inc("mqtt_lost_on_stop", 3)
        text = exposition(metrics)
        self.assertIn("# TYPE ocppgw_handshakes_refused_total counter\n", text)
        self.assertIn(
            'ocppgw_handshakes_refused_total{reason="proxy_header_timeout",status="proxy"} 1.0\n', text
        )
        self.assertIn(
            'ocppgw_connections_refused_total{listener="ws.default",reason="max_connections"} 1.0\n', text
        )
        self.assertIn("ocppgw_mqtt_lost_on_stop_total 3.0\n", text)

    def test_unlabelled_counters_start_at_zero(self) -> None:
        """A counter without labels is exposed before its first increment."""
        self.assertIn("ocppgw_connects_total 0.0\n", exposition(Metrics()))

    def test_every_metric_has_help(self) -> None:
        metrics = Metrics()
        metrics.gauge("connected_charge_points", lambda: 0)
        text = exposition(metrics)
        self.assertIn("# HELP ocppgw_connects_total charge points attached\n", text)
        self.assertIn("# HELP ocppgw_connected_charge_points charge points connected now\n", text)
        for name, (_kind, help_text, _labels) in metrics_module._METRICS.items():
            self.assertTrue(help_text, name)

    def test_no_created_samples(self) -> None:
        """Only values are exposed, as before prometheus_client: no *_created series."""
        metrics = Metrics()
        metrics.inc("published", kind="Call")
        metrics.observe("downstream_round_trip_seconds", 0.1, action="Reset")
        self.assertNotIn("_created", exposition(metrics))

    def test_label_order_is_one_series(self) -> None:
        """The same labels in another keyword order count in the same series."""
        metrics = Metrics()
        metrics.inc("schema_rejected", direction="upstream", action="Heartbeat")
        metrics.inc("schema_rejected", action="Heartbeat", direction="upstream")
        metrics.inc("schema_rejected", action="upstream", direction="Heartbeat")
        self.assertEqual(metrics.value("schema_rejected", direction="upstream", action="Heartbeat"), 2)
        self.assertEqual(metrics.value("schema_rejected", direction="Heartbeat", action="upstream"), 1)
        self.assertEqual(metrics.total("schema_rejected"), 3)

    def test_misuse_raises(self) -> None:
        """An undeclared name, the wrong kind or missing labels fail loudly instead of counting nowhere."""
        metrics = Metrics()
        self.assertRaises(TypeError, metrics.inc, "no_such_metric")
        self.assertRaises(TypeError, metrics.inc, "downstream_round_trip_seconds", action="Reset")
        self.assertRaises(TypeError, metrics.observe, "published", 1.0, kind="Call")
        self.assertRaises(TypeError, metrics.gauge, "connects", lambda: 1)
        self.assertRaises(ValueError, metrics.inc, "published")
        self.assertRaises(KeyError, metrics.value, "no_such_metric")


class GaugeTests(SynchronousTestCase):
    """A gauge's reader runs when the metrics are collected, not before."""

    def test_read_on_collect(self) -> None:
        metrics = Metrics()
        reads: list[int] = []

        def read() -> float:
            reads.append(1)
            return float(len(reads) * 10)

        metrics.gauge("mqtt_outstanding", read)
        self.assertEqual(reads, [])
        self.assertIn("ocppgw_mqtt_outstanding 10.0\n", exposition(metrics))
        self.assertIn("ocppgw_mqtt_outstanding 20.0\n", exposition(metrics))
        self.assertEqual(metrics.value("mqtt_outstanding"), 30)

    def test_unbound_gauge_absent(self) -> None:
        """A gauge nothing reads is not exposed (a link that does not exist is not 'disconnected')."""
        metrics = Metrics()
        self.assertNotIn("ocppgw_mqtt_connected", exposition(metrics))
        self.assertEqual(metrics.value("mqtt_connected"), 0)

    def test_rebinding_replaces_the_reader(self) -> None:
        metrics = Metrics()
        metrics.gauge("mqtt_held", lambda: 1.0)
        metrics.gauge("mqtt_held", lambda: 7.0)
        self.assertIn("ocppgw_mqtt_held 7.0\n", exposition(metrics))


class RoundTripTests(SessionTestCase):
    """ocppgw_downstream_round_trip_seconds: a downstream Call sent to the charge point until its reply."""

    def sample(self, suffix: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            f"ocppgw_downstream_round_trip_seconds_{suffix}", labels
        )

    def test_call_result(self) -> None:
        """The time on the session's clock, by Action, in its bucket."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        self.clock.advance(0.2)
        session.frame_received(frame(3, "c1", {"status": "Accepted"}))
        self.assertEqual(self.sample("count", action="Reset"), 1)
        self.assertAlmostEqual(self.sample("sum", action="Reset"), 0.2)
        self.assertEqual(self.sample("bucket", action="Reset", le="0.1"), 0)
        self.assertEqual(self.sample("bucket", action="Reset", le="0.25"), 1)

    def test_call_error(self) -> None:
        session = self.make()
        session.envelope_received(dn_call("c1", "ClearCache", {}))
        self.clock.advance(3)
        session.frame_received(frame(4, "c1", "NotSupported", "no", {}))
        self.assertEqual(self.sample("sum", action="ClearCache"), 3)

    def test_queued_call_timed_from_its_send(self) -> None:
        """A Call that waited in the queue is timed from when it went to the charge point."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        session.envelope_received(dn_call("c2", "ClearCache", {}))
        self.clock.advance(1)
        session.frame_received(frame(3, "c1", {"status": "Accepted"}))
        self.clock.advance(2)
        session.frame_received(frame(3, "c2", {"status": "Accepted"}))
        self.assertEqual(self.sample("sum", action="Reset"), 1)
        self.assertEqual(self.sample("sum", action="ClearCache"), 2)

    def test_timeouts_and_strangers_not_observed(self) -> None:
        """No reply, a late reply and a reply to nothing are not round trips."""
        session = self.make(reply_timeout=30.0)
        session.envelope_received(dn_call("c1"))
        self.clock.advance(30)
        session.frame_received(frame(3, "c1", {"status": "Accepted"}))
        session.frame_received(frame(3, "nobody", {}))
        self.assertIsNone(self.sample("count", action="Reset"))
        self.assertEqual(self.metrics.total("reply_timeouts"), 1)


def _used_metrics() -> dict[tuple[str, str], set[frozenset[str]]]:
    """(method, name) -> the label-name sets every ``.inc/.observe/.gauge("name", ...)`` in ocppgw/ uses."""
    used: dict[tuple[str, str], set[frozenset[str]]] = {}
    for path in Path(ocppgw.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in ("inc", "observe", "gauge") or not node.args:
                continue
            first = node.args[0]
            # A literal name, or ``"a" if x else "b"``; anything else fails below, as it should.
            names = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            labels = frozenset(k.arg for k in node.keywords if k.arg is not None and k.arg != "amount")
            for name in names:
                assert isinstance(name, ast.Constant), f"{path}:{node.lineno}: metric name not a literal"
                used.setdefault((node.func.attr, name.value), set()).add(labels)
    return used


class DeclarationTests(SynchronousTestCase):
    """Every metric the code names is declared, with the labels it is given."""

    def test_call_sites_match_the_table(self) -> None:
        used = _used_metrics()
        self.assertIn(("inc", "published"), used)
        self.assertIn(("observe", "downstream_round_trip_seconds"), used)
        kinds = {"inc": "Counter", "observe": "Histogram", "gauge": "Gauge"}
        for (method, name), label_sets in used.items():
            kind, _help, labels = metrics_module._METRICS[name]
            self.assertEqual(kind.__name__, kinds[method], name)
            self.assertEqual(label_sets, {frozenset(labels)}, name)

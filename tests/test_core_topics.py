"""Topic templates and the charge point ids that may name MQTT topics."""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.core import topics
from ocppgw.core.topics import (
    CID_VARIABLES,
    MAX_CID_BYTES,
    NODE_VARIABLES,
    TemplateProblem,
    TopicPlan,
    cid_problem,
    control_subscription_qos,
    has_cid,
    mountpoint_problem,
    node_topic,
    render,
    retained_on_wildcards,
    template_problem,
    unsafe_chars,
    unsafe_problem,
)


class RenderTests(SynchronousTestCase):
    """render() fills ``${cid}``, ``${clientid}`` and ``${node}``."""

    def test_cid(self) -> None:
        """``${cid}`` becomes the charge point id."""
        self.assertEqual(render("cp/${cid}", "CP1"), "cp/CP1")

    def test_clientid_alias(self) -> None:
        """``${clientid}`` is an alias of ``${cid}``."""
        self.assertEqual(render("cp/${clientid}/Reply", "CP1"), "cp/CP1/Reply")

    def test_node(self) -> None:
        """``${node}`` becomes the node name."""
        self.assertEqual(render("gateway/${node}/Presence", node="gw-1"), "gateway/gw-1/Presence")

    def test_every_occurrence(self) -> None:
        """Every occurrence is replaced, mixed variables included."""
        self.assertEqual(render("${node}/${cid}/${clientid}/${cid}", "CP1", "n1"), "n1/CP1/CP1/CP1")

    def test_no_variables(self) -> None:
        """A template without variables is returned unchanged."""
        self.assertEqual(render("cs/fixed", "CP1"), "cs/fixed")
        self.assertEqual(render("", "CP1"), "")

    def test_unknown_and_malformed_variables_kept(self) -> None:
        """Unknown variables and lookalikes are left as written."""
        self.assertEqual(render("${user}/$cid/${CID}/${cid/{cid}", "CP1"), "${user}/$cid/${CID}/${cid/{cid}")

    def test_substitution_is_not_recursive(self) -> None:
        """A cid that looks like a variable is inserted literally, and backslashes are not escapes."""
        self.assertEqual(render("a/${cid}/${node}", "${node}", "n"), "a/${node}/n")
        self.assertEqual(render("a/${cid}", r"x\1\g<0>"), r"a/x\1\g<0>")

    def test_many_templates(self) -> None:
        """Templates are split once and kept, a bounded number of them: past the bound, still right."""
        for i in range(700):
            template = f"m{i}/${{cid}}/{i}/${{node}}" if i % 2 else f"${{clientid}}/t{i}"
            expected = f"m{i}/CP/{i}/n" if i % 2 else f"CP/t{i}"
            self.assertEqual(render(template, "CP", "n"), expected)
            self.assertEqual(render(template, "CP", "n"), expected)

    def test_unicode(self) -> None:
        """Non-ASCII ids are inserted as they are."""
        self.assertEqual(render("cp/${cid}", "Säule-Ω-😀"), "cp/Säule-Ω-😀")

    def test_empty_values(self) -> None:
        """Missing values render as empty text."""
        self.assertEqual(render("x/${cid}/${node}/y"), "x///y")


class CidProblemTests(SynchronousTestCase):
    """cid_problem() names why an id cannot be used in topics, or gives None."""

    def test_valid(self) -> None:
        """Ordinary, unicode and spaced ids are fine."""
        for cid in (
            "CP1",
            "cp-001_a.b",
            "Säule-Ω-😀",
            "a b",
            "x" * MAX_CID_BYTES,
            "é" * 128,
            "😀" * 64,
            "~!$%&*",
        ):
            self.assertIsNone(cid_problem(cid), cid)

    def test_empty(self) -> None:
        """An empty id is refused."""
        self.assertEqual(cid_problem(""), "clientid_cannot_be_empty")

    def test_topic_characters(self) -> None:
        """``/``, ``+`` and ``#`` anywhere are refused."""
        for cid in ("/", "+", "#", "a/b", "a+", "#a", "/leading", "trailing/", "a//b"):
            self.assertEqual(cid_problem(cid), "unsupported_clientid", cid)

    def test_nul_and_control_characters(self) -> None:
        """NUL, C0 and C1 control characters and DEL are refused."""
        for char in ("\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"):
            self.assertEqual(cid_problem(f"CP{char}1"), "unsupported_clientid", repr(char))

    def test_broker_unsafe_characters(self) -> None:
        """With a broker's unsafe characters, ids holding one are refused too; generic adds none."""
        self.assertEqual(unsafe_chars("generic"), "")
        for broker, refused in (("rabbitmq", ".*"), ("nats", ". ")):
            self.assertEqual(unsafe_chars(broker), refused)
            for char in refused:
                self.assertEqual(cid_problem(f"CP{char}1", unsafe_chars(broker)), "unsupported_clientid")
            self.assertIsNone(cid_problem("CP-1_a>b", unsafe_chars(broker)))
        self.assertIsNone(cid_problem("CP.1 *"))

    def test_lone_surrogate(self) -> None:
        """A lone surrogate cannot be UTF-8 and is refused."""
        self.assertEqual(cid_problem("CP\ud800"), "unsupported_clientid")

    def test_length_in_bytes(self) -> None:
        """The limit is 256 UTF-8 bytes, not characters."""
        self.assertEqual(MAX_CID_BYTES, 256)
        self.assertIsNone(cid_problem("a" * 256))
        self.assertEqual(cid_problem("a" * 257), "clientid_too_long")
        self.assertEqual(cid_problem("é" * 129), "clientid_too_long")
        self.assertEqual(cid_problem("😀" * 65), "clientid_too_long")
        self.assertEqual(cid_problem("a" * 255 + "é"), "clientid_too_long")

    def test_too_long_reported_first(self) -> None:
        """An id both too long and holding ``/`` is reported as too long."""
        self.assertEqual(cid_problem("/" * 300), "clientid_too_long")


class TopicPlanTests(SynchronousTestCase):
    """TopicPlan holds one charge point's rendered topics."""

    def plan(self) -> TopicPlan:
        return TopicPlan(
            call="ocpp/cp/CP1",
            reply="ocpp/cp/CP1/Reply",
            error="ocpp/cp/CP1/Error",
            dnstream="ocpp/cs/CP1",
            presence="ocpp/cp/CP1/Presence",
            overrides={"BootNotification": "ocpp/cp/CP1/Boot"},
        )

    def test_override(self) -> None:
        """A Call whose Action has an override goes to the override topic."""
        self.assertEqual(self.plan().for_call("BootNotification"), "ocpp/cp/CP1/Boot")

    def test_default(self) -> None:
        """Other Calls go to the call topic; Action names are case-sensitive."""
        self.assertEqual(self.plan().for_call("Heartbeat"), "ocpp/cp/CP1")
        self.assertEqual(self.plan().for_call("bootnotification"), "ocpp/cp/CP1")

    def test_frozen(self) -> None:
        """A plan cannot be changed once rendered."""
        plan = self.plan()
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, plan, "call", "x")


class TemplateRuleTests(SynchronousTestCase):
    """template_problem(), mountpoint_problem() and has_cid(): the rules config checks templates by."""

    def test_variables(self) -> None:
        """``${cid}`` and ``${clientid}`` per charge point, ``${node}`` per node; render knows all three."""
        self.assertEqual(CID_VARIABLES, {"cid", "clientid"})
        self.assertEqual(NODE_VARIABLES, {"node"})
        for name in CID_VARIABLES:
            self.assertEqual(render(f"a/${{{name}}}", "CP1", "n1"), "a/CP1")
        for name in NODE_VARIABLES:
            self.assertEqual(render(f"a/${{{name}}}", "CP1", "n1"), "a/n1")

    def test_has_cid(self) -> None:
        """Either spelling of the charge point variable; ``${node}`` and lookalikes do not count."""
        self.assertTrue(has_cid("cp/${cid}"))
        self.assertTrue(has_cid("${clientid}/x"))
        for template in ("cp/all", "g/${node}", "$cid", "${CID}", "{cid}"):
            self.assertFalse(has_cid(template), template)

    def test_valid_templates(self) -> None:
        """Valid templates have no problem."""
        self.assertIsNone(template_problem("cp/${cid}", CID_VARIABLES, needs_cid=True))
        self.assertIsNone(template_problem("g/${node}/Presence", NODE_VARIABLES))
        self.assertIsNone(template_problem("cs/+/${cid}/#", CID_VARIABLES, is_filter=True))
        self.assertIsNone(template_problem("x" * 65535))

    def test_problems(self) -> None:
        """Each rule gives its reason, quoting the template unless the reason says it all."""
        cases = [
            (("",), {}, TemplateProblem("must not be empty", quote=False)),
            (("a/${user}", CID_VARIABLES), {}, TemplateProblem("unknown template variable ${user}", False)),
            (("a/${node}", CID_VARIABLES), {}, TemplateProblem("unknown template variable ${node}", False)),
            (("a/${cid", CID_VARIABLES), {}, TemplateProblem("malformed template variable")),
            (("a/\x00",), {}, TemplateProblem("must not contain a NUL character")),
            (("x" * 65536,), {}, TemplateProblem("is longer than the 65535 bytes MQTT allows", False)),
            (("a/#",), {}, TemplateProblem("must not contain the MQTT wildcards + or #")),
            (("a/${cid}+", CID_VARIABLES), {}, TemplateProblem("must not contain the MQTT wildcards + or #")),
            (
                ("a/#/${cid}", CID_VARIABLES),
                {"is_filter": True},
                TemplateProblem(
                    "expected an MQTT topic filter where + is a whole level and # only the whole last level"
                ),
            ),
            (("cp/all", CID_VARIABLES), {"needs_cid": True}, TemplateProblem("must contain ${cid}")),
        ]
        for args, flags, expected in cases:
            self.assertEqual(template_problem(*args, **flags), expected, args)

    def test_length_after_filling(self) -> None:
        """The length limit applies to the template with one-byte stand-ins for its variables."""
        self.assertIsNone(template_problem("x" * 65529 + "${cid}", CID_VARIABLES))
        self.assertIsNotNone(template_problem("x" * 65535 + "${cid}", CID_VARIABLES))
        self.assertEqual(topics.MAX_TOPIC_BYTES, 65535)

    def test_mountpoints(self) -> None:
        """A mountpoint may be empty or hold ``${cid}``, but no wildcard, NUL or other variable."""
        for mountpoint in ("", "ocpp/", "site/${cid}/", "${clientid}"):
            self.assertIsNone(mountpoint_problem(mountpoint), mountpoint)
        self.assertEqual(
            mountpoint_problem("+/"), TemplateProblem("must not contain the MQTT wildcards + or #")
        )
        self.assertEqual(mountpoint_problem("a\x00/"), TemplateProblem("must not contain a NUL character"))
        self.assertEqual(
            mountpoint_problem("${node}/"), TemplateProblem("unknown template variable ${node}", quote=False)
        )

    def test_stdlib_only(self) -> None:
        """The rules import only the standard library: ocppgw.config depends on them, not the reverse."""
        tree = ast.parse(Path(topics.__file__).read_text(encoding="utf-8"))
        imported = {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        self.assertIn("re", imported)
        for name in imported:
            self.assertIn(name.split(".")[0], sys.stdlib_module_names | {"__future__"}, name)


class RenderedPlanTests(SynchronousTestCase):
    """A charge point's plan and the node topic, rendered from the templates once."""

    def test_plan_under_a_mountpoint_with_cid(self) -> None:
        """Every topic gets the rendered mountpoint in front; overrides replace the Call topic per Action."""
        templates = TopicPlan(
            "cp/${cid}",
            "cp/${cid}/Reply",
            "cp/${clientid}/Err",
            "cs/${cid}",
            "cp/${cid}/P",
            {"Heartbeat": "hb/${cid}"},
        )
        plan = templates.rendered("t/${cid}/", "CP1")
        self.assertEqual(
            (plan.call, plan.reply, plan.error, plan.dnstream, plan.presence),
            ("t/CP1/cp/CP1", "t/CP1/cp/CP1/Reply", "t/CP1/cp/CP1/Err", "t/CP1/cs/CP1", "t/CP1/cp/CP1/P"),
        )
        self.assertEqual(plan.for_call("Heartbeat"), "t/CP1/hb/CP1")
        self.assertEqual(plan.for_call("Authorize"), "t/CP1/cp/CP1")

    def test_node_topic(self) -> None:
        """The node topic is mounted like the rest, except under a per-charge-point mountpoint."""
        self.assertEqual(node_topic("ocpp/", "gateway/${node}/Presence", "n1"), "ocpp/gateway/n1/Presence")
        self.assertEqual(node_topic("t/${cid}/", "gateway/${node}/Presence", "n1"), "gateway/n1/Presence")


class BrokerRuleTests(SynchronousTestCase):
    """What a broker named in [mqtt] broker cannot carry, and whether it shows retained messages."""

    def test_unsafe_problem(self) -> None:
        """Each unsafe character found is named once, with the broker and the text."""
        self.assertIsNone(unsafe_problem("ocpp/gw1.example.com/x", "generic"))
        self.assertIsNone(unsafe_problem("ocpp/${cid}/x", "nats"))
        self.assertEqual(
            unsafe_problem("a.b c.d", "nats"),
            "must not contain ' ' and '.': [mqtt] broker = nats cannot carry it in a topic, got 'a.b c.d'",
        )
        self.assertIn("'*'", unsafe_problem("cp/*", "rabbitmq") or "")
        self.assertIsNone(unsafe_problem("cp x", "rabbitmq"))

    def test_retained_on_wildcards(self) -> None:
        self.assertEqual([retained_on_wildcards(b) for b in topics.BROKERS], [True, False, True])

    def test_control_subscription_qos(self) -> None:
        """QoS 0 only on NATS, where a QoS 1 subscription is a JetStream consumer."""
        self.assertEqual([control_subscription_qos(b) for b in topics.BROKERS], [1, 1, 0])


class FilterMatchTests(SynchronousTestCase):
    """``topic_matches`` (the link's matching) agrees with paho's ``topic_matches_sub`` everywhere."""

    FILTERS = (
        "#", "+", "+/+", "/+", "+/#", "a", "a/b", "a/+", "a/#", "a/+/c", "a/+/#", "+/b/#", "a//c",
        "a/+/+", "$SYS/#", "$SYS/+", "$share/x", "gateway/cluster/takeover", "ocpp/cp/+/Presence",
    )
    TOPICS = (
        "a", "a/", "/a", "/", "", "a/b", "a/b/c", "a/b/c/d", "a//c", "b", "b/b", "x/b/y",
        "$SYS", "$SYS/x", "$SYS/x/y", "$share/x", "gateway/cluster/takeover", "ocpp/cp/CP1/Presence",
        "ocpp/cp/CP1/Presence/x", "ocpp/cp//Presence",
    )

    def test_agrees_with_paho(self) -> None:
        from paho.mqtt.client import topic_matches_sub

        for topic_filter in self.FILTERS:
            for topic in self.TOPICS:
                self.assertEqual(
                    topics.topic_matches(topic_filter, topic),
                    topic_matches_sub(topic_filter, topic),
                    f"{topic_filter!r} on {topic!r}",
                )

    def test_random_levels_agree_with_paho(self) -> None:
        import random

        from paho.mqtt.client import topic_matches_sub

        rng = random.Random(12)
        words = ["a", "b", "", "$x"]
        for _ in range(3000):
            topic = "/".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
            levels = [rng.choice([*words[:3], "+"]) for _ in range(rng.randint(1, 4))]
            if rng.random() < 0.4:
                levels.append("#")
            topic_filter = "/".join(levels)
            self.assertEqual(
                topics.topic_matches(topic_filter, topic),
                topic_matches_sub(topic_filter, topic),
                f"{topic_filter!r} on {topic!r}",
            )

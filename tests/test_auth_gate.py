"""``AuthenticationGate``: bounded in time, failures as unavailable, counted, allows cached for cache_ttl."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from ocppgw.auth.gate import GRACE, AuthenticationGate
from ocppgw.core.ports import Credentials, Decision, IAuthenticator, Outcome
from ocppgw.metrics import Metrics

CREDENTIALS = Credentials(cid="CP1", peer="10.0.0.1:5", listener="ws.a", username="CP1", password=b"s3cret")


@implementer(IAuthenticator)
class Scripted:
    """Answers with whatever ``answer`` holds: a Decision, a Deferred or an exception; counts calls."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.calls = 0

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        self.calls += 1
        if isinstance(self.answer, Exception):
            return fail(self.answer)
        if isinstance(self.answer, Deferred):
            return self.answer
        return succeed(self.answer)  # type: ignore[arg-type]


class GateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics()

    def gate(self, backend: Scripted, cache_ttl: float = 0.0) -> AuthenticationGate:
        return AuthenticationGate(backend, "http", 5.0, cache_ttl, self.clock, self.metrics)

    def test_answers_counted_by_backend_and_result(self) -> None:
        """Each outcome is passed on as it is and counted under the backend's name."""
        for decision in (Decision.allow(), Decision.deny("bad_username_or_password"), Decision.ignore()):
            result = self.successResultOf(self.gate(Scripted(decision)).authenticate(CREDENTIALS))
            self.assertEqual(result, decision)
        for result in ("allow", "deny", "ignore"):
            self.assertEqual(self.metrics.value("auth_decisions", backend="http", result=result), 1)

    def test_hung_backend_is_unavailable_after_its_timeout(self) -> None:
        """A backend that never answers gives UNAVAILABLE at request_timeout + GRACE, not before."""
        d = self.gate(Scripted(Deferred())).authenticate(CREDENTIALS)
        self.clock.advance(5.0 + GRACE - 0.01)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(d).outcome, Outcome.UNAVAILABLE)
        self.assertEqual(self.metrics.value("auth_decisions", backend="http", result="unavailable"), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ready_answer_arms_no_timer(self) -> None:
        """An answer the backend has at once arms no guard timer; a pending one arms exactly one,
        cancelled when the answer comes."""
        self.successResultOf(self.gate(Scripted(Decision.allow())).authenticate(CREDENTIALS))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        pending: Deferred[Decision] = Deferred()
        d = self.gate(Scripted(pending)).authenticate(CREDENTIALS)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        pending.callback(Decision.allow())
        self.assertEqual(self.successResultOf(d), Decision.allow())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failing_backend_is_unavailable(self) -> None:
        """A backend whose Deferred fails (a bug) gives UNAVAILABLE; the failure is logged once."""
        d = self.gate(Scripted(RuntimeError("boom"))).authenticate(CREDENTIALS)
        self.assertEqual(self.successResultOf(d).outcome, Outcome.UNAVAILABLE)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_password_never_logged(self) -> None:
        """The decision's log line names cid, username and result, never the password."""
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.successResultOf(self.gate(Scripted(Decision.allow())).authenticate(CREDENTIALS))
        (event,) = [e for e in events if "authentication of" in str(e.get("decision", ""))]
        self.assertEqual((event["cid"], event["result"]), ("CP1", "allow"))
        self.assertEqual(
            formatEvent(event), "authentication of CP1 from 10.0.0.1:5 (username 'CP1') by http: allow "
        )
        self.assertNotIn("s3cret", repr(events))

    def test_allow_cached_for_cache_ttl(self) -> None:
        """With cache_ttl, the same credentials are allowed again without asking, until it expires; a
        different password is asked again."""
        backend = Scripted(Decision.allow())
        gate = self.gate(backend, cache_ttl=60.0)
        self.successResultOf(gate.authenticate(CREDENTIALS))
        self.clock.advance(59)
        self.assertTrue(self.successResultOf(gate.authenticate(CREDENTIALS)).allowed)
        self.assertEqual((backend.calls, self.metrics.value("auth_cache_hits", backend="http")), (1, 1))
        other = Credentials(cid="CP1", peer="10.0.0.1:5", listener="ws.a", username="CP1", password=b"other")
        backend.answer = Decision.deny("bad_username_or_password")
        self.assertFalse(self.successResultOf(gate.authenticate(other)).allowed)
        self.clock.advance(2)
        self.assertFalse(self.successResultOf(gate.authenticate(CREDENTIALS)).allowed)
        self.assertEqual(backend.calls, 3)

    def test_refusals_not_cached(self) -> None:
        """A deny is asked again every time: a fixed password works at once."""
        backend = Scripted(Decision.deny("bad_username_or_password"))
        gate = self.gate(backend, cache_ttl=60.0)
        self.successResultOf(gate.authenticate(CREDENTIALS))
        backend.answer = Decision.allow()
        self.assertTrue(self.successResultOf(gate.authenticate(CREDENTIALS)).allowed)

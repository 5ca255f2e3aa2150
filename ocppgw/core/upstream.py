"""One charge point's way up to the broker: the topic chosen by message kind, the envelope encoded, published.

The session calls the method for the kind it already knows, so a frame goes from the
session to the broker link without passing back through the router.
"""

from __future__ import annotations

from ocppgw.core.messages import Call, CallError, CallResult, Message, encode_envelope
from ocppgw.core.ports import IBrokerLink
from ocppgw.core.topics import TopicPlan
from ocppgw.metrics import Metrics


class Upstream:
    """Publishes one charge point's Calls, CallResults and CallErrors; False when the link refuses."""

    __slots__ = ("_link", "_metrics", "_qos", "topics")

    def __init__(self, link: IBrokerLink, topics: TopicPlan, qos: int, metrics: Metrics) -> None:
        self._link = link
        self._metrics = metrics
        self._qos = qos
        self.topics = topics

    def publish_call(self, call: Call) -> bool:
        """A Call from the charge point, on its Action's topic."""
        return self._publish(self.topics.for_call(call.action), call, "Call")

    def publish_result(self, result: CallResult) -> bool:
        """A CallResult from the charge point, on the reply topic."""
        return self._publish(self.topics.reply, result, "CallResult")

    def publish_error(self, error: CallError) -> bool:
        """A CallError, the charge point's or the gateway's, on the error topic."""
        return self._publish(self.topics.error, error, "CallError")

    def _publish(self, topic: str, message: Message, kind: str) -> bool:
        accepted = self._link.publish(topic, encode_envelope(message), self._qos)
        if accepted:
            self._metrics.inc("published", kind=kind)
        return accepted

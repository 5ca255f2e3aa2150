"""The test helpers' own guarantees (``tests.support``), where a flaw would make other tests flaky."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests import support


class _Socket:
    """socket.socket as far as free_port uses it, bound to the next of ``ports``."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports

    def __enter__(self) -> _Socket:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def bind(self, address: tuple[str, int]) -> None:
        self.port = self.ports.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return "127.0.0.1", self.port


class FreePortTests(SynchronousTestCase):
    def test_never_the_same_twice(self) -> None:
        """The kernel giving the same port again (as it did to a NATS node's client and route ports)
        does not make free_port hand it out twice."""
        ports = [40001, 40001, 40001, 40002]
        self.patch(support.socket, "socket", lambda *args: _Socket(ports))
        self.patch(support, "_HANDED_OUT", support.collections.deque(maxlen=8))
        self.assertEqual([support.free_port(), support.free_port()], [40001, 40002])
        self.assertEqual(ports, [])

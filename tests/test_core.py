"""``ocppgw.core`` is sans-IO: importing any of it loads no adapter library."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import ocppgw.core

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = ("autobahn", "paho", "OpenSSL", "service_identity")
_LOADED = (
    "print(sorted(m for m in sys.modules if m.split('.')[0] in ('autobahn', 'paho', 'OpenSSL', "
    "'service_identity')))"
)


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.strip()


class CoreImportsNoAdapterTests(SynchronousTestCase):
    def test_package(self) -> None:
        """The issue's own check: ``import ocppgw.core`` loads none of the adapter libraries."""
        self.assertEqual(_run(f"import ocppgw.core, sys; {_LOADED}"), "[]")

    def test_every_module(self) -> None:
        """Importing every module of ``ocppgw.core`` together still loads none of them."""
        names = sorted(f"ocppgw.core.{m.name}" for m in pkgutil.iter_modules(ocppgw.core.__path__))
        self.assertIn("ocppgw.core.router", names)
        self.assertIn("ocppgw.core.session", names)
        imports = "; ".join(f"import {name}" for name in names)
        self.assertEqual(_run(f"import sys; {imports}; {_LOADED}"), "[]")

    def test_check_sees_adapters(self) -> None:
        """The check itself can fail: importing the WebSocket adapter shows Autobahn and OpenSSL."""
        loaded = json.loads(_run(f"import sys, ocppgw.ws.server; {_LOADED}").replace("'", '"'))
        self.assertIn("autobahn", loaded)

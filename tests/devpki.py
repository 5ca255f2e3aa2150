"""The development PKI script (``certs/make_dev_certs.py``) loaded for tests, and TLS client contexts."""

from __future__ import annotations

import importlib.util
import ssl
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

SCRIPT = Path(__file__).resolve().parent.parent / "certs" / "make_dev_certs.py"


def _load() -> ModuleType:
    name = "ocppgw_make_dev_certs"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def make_dev_certs(directory: Any, cids: Any = (), **kwargs: Any) -> Any:
    """``certs/make_dev_certs.py``'s ``make_dev_certs``; returns its ``DevCerts``."""
    return _load().make_dev_certs(directory, cids, **kwargs)


def client_context(
    ca: Any,
    cert: Any = None,
    key: Any = None,
    version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A client context trusting ``ca``, presenting ``cert``/``key`` when given, pinned to ``version``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    if version is not None:
        if version < ssl.TLSVersion.TLSv1_2:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS < 1.2 at level 1 and up
        context.minimum_version = version
        context.maximum_version = version
    return context

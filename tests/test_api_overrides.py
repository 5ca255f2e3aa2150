"""Tests for ocppgw.api.overrides: the API's changes layered over gw.ini, saved atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.api.overrides import merged, overrides_path, read_overrides, write_overrides
from ocppgw.config import ConfigError, load_config

INI = """[gateway]
mountpoint = ocpp/
data_dir = data

[listeners.ws.default]
bind = 127.0.0.1:0
path = /ocpp

[listeners.ws.second]
bind = 127.0.0.1:0
"""


class OverridesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        self.root.mkdir()
        self.ini = self.root / "gw.ini"
        self.ini.write_text(INI)
        self.data = self.root / "data"

    def test_no_file_is_gw_ini(self) -> None:
        """Without overrides.json the config is gw.ini's alone."""
        config = load_config(self.ini)
        self.assertEqual(config.gateway.mountpoint, "ocpp/")
        self.assertEqual([x.name for x in config.listeners], ["default", "second"])

    def test_precedence(self) -> None:
        """Overrides win key by key, a null key goes back to its default, a null section is removed
        and a new section is added."""
        write_overrides(
            self.data,
            {
                "gateway": {"mountpoint": "api/"},
                "listeners.ws.default": {"path": None, "max_connections": "7"},
                "listeners.ws.second": None,
                "listeners.ws.third": {"bind": "127.0.0.1:0"},
            },
        )
        config = load_config(self.ini)
        self.assertEqual(config.gateway.mountpoint, "api/")
        default, third = config.listeners
        self.assertEqual((default.name, default.path, default.max_connections), ("default", "/ocpp", 7))
        self.assertEqual(default.host, "127.0.0.1")  # kept from gw.ini
        self.assertEqual(third.name, "third")

    def test_file_mode_and_atomic(self) -> None:
        """The file is 0600 and no temporary file is left behind."""
        write_overrides(self.data, {"gateway": {"mountpoint": "x/"}})
        path = overrides_path(self.data)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.listdir(self.data), ["overrides.json"])
        self.assertEqual(read_overrides(self.data), {"gateway": {"mountpoint": "x/"}})

    def test_corrupt_file_one_line(self) -> None:
        """A corrupt file stops loading with one line naming it and where JSON broke."""
        self.data.mkdir()
        overrides_path(self.data).write_text('{\n "gateway": {\n  "mountpoint": \n')
        e = self.assertRaises(ConfigError, load_config, self.ini)
        self.assertEqual(e.problems, [f"{self.data / 'overrides.json'}: not valid JSON (line 4 column 1)"])

    def test_wrong_shape(self) -> None:
        """A value that is not text, or data_dir overridden, is refused with one line."""
        write_overrides(self.data, {"gateway": {"idle_timeout": 5}})
        e = self.assertRaises(ConfigError, load_config, self.ini)
        self.assertIn("[gateway] idle_timeout: expected text or null", e.problems[0])
        write_overrides(self.data, {"gateway": {"data_dir": "/tmp"}})
        e = self.assertRaises(ConfigError, load_config, self.ini)
        self.assertIn("data_dir: cannot be overridden", e.problems[0])

    def test_invalid_value_names_overrides(self) -> None:
        """An invalid overridden value is checked like gw.ini's and its problem names overrides.json."""
        write_overrides(self.data, {"gateway": {"idle_timeout": "soon"}})
        e = self.assertRaises(ConfigError, load_config, self.ini)
        self.assertEqual(len(e.problems), 1)
        self.assertTrue(e.problems[0].startswith(f"{self.data / 'overrides.json'}: [gateway] idle_timeout:"))

    def test_given_overrides_checked_not_read(self) -> None:
        """load_config with overrides checks those, not the file's (a change before it is saved)."""
        write_overrides(self.data, {"gateway": {"mountpoint": "file/"}})
        config = load_config(self.ini, overrides={"gateway": {"mountpoint": "given/"}})
        self.assertEqual(config.gateway.mountpoint, "given/")

    def test_merged(self) -> None:
        """merged layers changes: keys merge, null replaces, a section after null starts afresh."""
        current = {"gateway": {"a": "1"}, "listeners.ws.x": None}
        result = merged(current, {"gateway": {"b": "2"}, "listeners.ws.x": {"bind": "1"}, "y": None})
        self.assertEqual(
            result, {"gateway": {"a": "1", "b": "2"}, "listeners.ws.x": {"bind": "1"}, "y": None}
        )
        self.assertEqual(current["gateway"], {"a": "1"})
